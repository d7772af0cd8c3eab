"""Mosaic: four images tiled around a random centre (YOLOv4's freebie).

As ultralytics yolov5's `load_mosaic`: on a `2S x 2S` grey canvas, a centre
`(xc, yc)` is drawn in `[S/2, 3S/2)`; image 0 ends at the centre from the top
left, image 1 starts there towards the top right, image 2 towards the bottom
left, image 3 towards the bottom right, each cropped by the canvas. Boxes move
with their image and are clipped to the canvas. `random_perspective` with
border `-S/2` then brings the canvas back to `S x S` (see
`keras_yolo.data.augment.training_pipeline`).

keras_cv 0.9's `Mosaic` layer runs under Keras 3.15 and its boxes pass the
box-on-pixels check on most outputs, but it is a different recipe (batch-level
companions drawn with replacement, its own crop and rescale, no perspective
warp, no candidate filter) with a stateful seed; this one reproduces
ultralytics' `load_mosaic` (tests/test_data_augment_reference.py).
"""

import tensorflow as tf

from keras_yolo.data.augment.geometry import FILL_VALUE


def _tile(image, y1a, y2a, x1a, x2a, y1b, x1b, pad):
    """The crop `image[y1b:y1b + y2a - y1a, x1b:x1b + x2a - x1a]` padded with
    `pad = [[top, bottom], [left, right]]` to fill one quadrant."""
    crop = image[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
    return tf.pad(crop, pad + [[0, 0]], constant_values=FILL_VALUE)


def mosaic(images, image_sizes, boxes, labels, center, image_size):
    """Tiles four images on a `2S x 2S` canvas around `center`.

    Args:
        images: `(4, H, W, 3)` uint8, image `i` in `images[i, :h_i, :w_i]`
            (e.g. a padded batch of images resized to a longer side `S`),
            or a list of four `(h_i, w_i, 3)` images (no padding copy).
        image_sizes: `(4, 2)` int32 `(h_i, w_i)`.
        boxes: `(4, N, 4)` float32 `xyxy` pixels of each image.
        labels: `(4, N)` int32, negative = padding.
        center: `(2,)` int32 `(yc, xc)` in `[0, 2S]`.
        image_size: S.

    Returns:
        `(canvas (2S, 2S, 3) uint8, boxes (4N, 4), labels (4N,))`, boxes in
        canvas pixels clipped to it.

    Example:
        >>> canvas, b, l = mosaic(images, sizes, boxes, labels,
        ...                       center=tf.constant([320, 400]), image_size=320)
    """
    s2 = 2 * image_size
    yc, xc = center[0], center[1]
    tiles, offsets = [], []
    for i in range(4):
        h, w = image_sizes[i, 0], image_sizes[i, 1]
        if i == 0:  # top left
            x1a, y1a, x2a, y2a = tf.maximum(xc - w, 0), tf.maximum(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
            pad = [[y1a, 0], [x1a, 0]]
        elif i == 1:  # top right
            x1a, y1a, x2a, y2a = xc, tf.maximum(yc - h, 0), tf.minimum(xc + w, s2), yc
            x1b, y1b = 0, h - (y2a - y1a)
            pad = [[y1a, 0], [0, s2 - x2a]]
        elif i == 2:  # bottom left
            x1a, y1a, x2a, y2a = tf.maximum(xc - w, 0), yc, xc, tf.minimum(s2, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
            pad = [[0, s2 - y2a], [x1a, 0]]
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, tf.minimum(xc + w, s2), tf.minimum(s2, yc + h)
            x1b, y1b = 0, 0
            pad = [[0, s2 - y2a], [0, s2 - x2a]]
        tiles.append(_tile(images[i], y1a, y2a, x1a, x2a, y1b, x1b, pad))
        offsets.append(tf.cast(tf.stack([x1a - x1b, y1a - y1b]), tf.float32))
    canvas = tf.concat([tf.concat(tiles[:2], axis=1),
                        tf.concat(tiles[2:], axis=1)], axis=0)
    canvas = tf.ensure_shape(canvas, [s2, s2, images[0].shape[-1]])
    offsets = tf.tile(tf.stack(offsets)[:, None, :], [1, 1, 2])  # (4, 1, 4)
    moved = tf.clip_by_value(tf.cast(boxes, tf.float32) + offsets, 0.0,
                             float(s2))
    return (canvas, tf.reshape(moved, [-1, 4]),
            tf.reshape(tf.cast(labels, tf.int32), [-1]))
