"""MixUp and CutMix of two images with their boxes.

MixUp (Zhang et al. 2018, as ultralytics yolov5's `mixup`): the pixels are
`r x A + (1 - r) x B` with `r ~ Beta(32, 32)`, truncated to uint8, and the
boxes of both images are kept.

CutMix (Yun et al. 2019, a YOLOv4 freebie): a rectangle of `B` replaces the
same rectangle of `A`. Its area is `1 - lam` of the image with `lam ~ U(0, 1)`
(Beta(1, 1), keras' `CutMix` default) and its centre is uniform. Keras'
`CutMix` layer raises NotImplementedError for boxes, hence this one:

* a box of `A` shrinks to the bounding box of its visible part (it shrinks
  only when the rectangle covers a whole side strip of it; a hole in the
  middle or a corner leaves its envelope unchanged) and is dropped when more
  than `max_occlusion` (0.6, ultralytics' cutout rule) of it is covered;
* a box of `B` is clipped to the rectangle and kept when `box_candidates`
  accepts the clipped box against the whole one.

Boxes are `xyxy` pixels, padded rows carry the label -1.
"""

import tensorflow as tf

from keras_yolo.data.augment.geometry import box_candidates

MIXUP_ALPHA = 32.0  # ultralytics: np.random.beta(32.0, 32.0)
MAX_OCCLUSION = 0.6  # ultralytics' cutout keeps a box less than 60% covered


def sample_beta(seed, alpha, beta, shape=()):
    """Stateless Beta(alpha, beta) draws as `X / (X + Y)` of two gammas."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    x = tf.random.stateless_gamma(shape, seeds[0], alpha=alpha)
    y = tf.random.stateless_gamma(shape, seeds[1], alpha=beta)
    return x / (x + y)


def mixup(image1, boxes1, labels1, image2, boxes2, labels2, ratio):
    """Blends two images and concatenates their boxes.

    Args:
        image1, image2: `(..., H, W, 3)` uint8 of one size.
        boxes1, boxes2: `(..., N1, 4)`, `(..., N2, 4)` `xyxy` pixels.
        labels1, labels2: `(..., N1)`, `(..., N2)` int32.
        ratio: r, scalar or `(...)` broadcastable per image.

    Returns:
        `(image uint8, boxes (..., N1 + N2, 4), labels (..., N1 + N2))`.

    Example:
        >>> image, boxes, labels = mixup(a, boxes_a, labels_a, b, boxes_b,
        ...                              labels_b, ratio=0.5)
    """
    ratio = tf.cast(ratio, tf.float32)
    ratio = tf.reshape(ratio, tf.concat([tf.shape(ratio), [1, 1, 1]], 0))
    blended = (tf.cast(image1, tf.float32) * ratio
               + tf.cast(image2, tf.float32) * (1.0 - ratio))
    image = tf.cast(tf.clip_by_value(tf.floor(blended), 0, 255), tf.uint8)
    return (image, tf.concat([boxes1, boxes2], axis=-2),
            tf.concat([labels1, labels2], axis=-1))


def cutmix_rectangle(draws, image_size):
    """The pasted rectangle from three uniforms `(lam, cx, cy)` in [0, 1).

    Returns:
        `(4,)` float32 `xyxy` pixels, integer-valued, inside the image.
    """
    size = tf.cast(image_size, tf.float32)
    cut = size * tf.sqrt(1.0 - draws[0])
    cx, cy = draws[1] * size, draws[2] * size
    rect = tf.stack([cx - cut / 2, cy - cut / 2, cx + cut / 2, cy + cut / 2])
    return tf.clip_by_value(tf.round(rect), 0.0, size)


def visible_boxes(boxes, rect):
    """Bounding box of the part of each box outside `rect`, and that part's
    fraction of the box.

    Args:
        boxes: `(..., N, 4)` `xyxy`; rect: `(..., 4)` `xyxy`.

    Returns:
        `(boxes (..., N, 4), visible fraction (..., N))`.
    """
    rect = tf.expand_dims(rect, -2)
    bx1, by1, bx2, by2 = tf.unstack(boxes, axis=-1)
    rx1, ry1, rx2, ry2 = tf.unstack(rect, axis=-1)
    iw = tf.maximum(tf.minimum(bx2, rx2) - tf.maximum(bx1, rx1), 0.0)
    ih = tf.maximum(tf.minimum(by2, ry2) - tf.maximum(by1, ry1), 0.0)
    area = (bx2 - bx1) * (by2 - by1)
    visible = 1.0 - iw * ih / tf.maximum(area, 1e-9)
    spans_x = (rx1 <= bx1) & (rx2 >= bx2) & (ih > 0)  # covers whole width
    spans_y = (ry1 <= by1) & (ry2 >= by2) & (iw > 0)
    ny1 = tf.where(spans_x & (ry1 <= by1), tf.maximum(by1, ry2), by1)
    ny2 = tf.where(spans_x & (ry2 >= by2), tf.minimum(by2, ry1), by2)
    nx1 = tf.where(spans_y & (rx1 <= bx1), tf.maximum(bx1, rx2), bx1)
    nx2 = tf.where(spans_y & (rx2 >= bx2), tf.minimum(bx2, rx1), bx2)
    return tf.stack([nx1, ny1, nx2, ny2], axis=-1), visible


def cutmix(image1, boxes1, labels1, image2, boxes2, labels2, rect,
           max_occlusion=MAX_OCCLUSION):
    """Pastes `rect` of image 2 into image 1 and merges the boxes.

    Args:
        image1, image2: `(H, W, 3)` of one size.
        boxes1, boxes2: `(N1, 4)`, `(N2, 4)` `xyxy` pixels.
        labels1, labels2: `(N1,)`, `(N2,)` int32, negative = padding.
        rect: `(4,)` `xyxy` pixels of the pasted rectangle (integer-valued).
        max_occlusion: a box of image 1 covered more than this is dropped.

    Returns:
        `(image, boxes (N1 + N2, 4), labels (N1 + N2,))`, dropped rows with
        label -1.

    Example:
        >>> rect = cutmix_rectangle(tf.random.stateless_uniform([3], (0, 1)), 320)
        >>> image, boxes, labels = cutmix(a, ba, la, b, bb, lb, rect)
    """
    shape = tf.shape(image1)
    ys = tf.cast(tf.range(shape[0]), tf.float32)[:, None, None]
    xs = tf.cast(tf.range(shape[1]), tf.float32)[None, :, None]
    inside = ((xs >= rect[0]) & (xs < rect[2]) & (ys >= rect[1])
              & (ys < rect[3]))
    image = tf.where(inside, image2, image1)

    boxes1 = tf.cast(boxes1, tf.float32)
    boxes2 = tf.cast(boxes2, tf.float32)
    shrunk, visible = visible_boxes(boxes1, rect)
    keep1 = (visible >= 1.0 - max_occlusion) & box_candidates(boxes1, shrunk)
    clipped = tf.concat([tf.maximum(boxes2[:, :2], rect[:2]),
                         tf.minimum(boxes2[:, 2:], rect[2:])], axis=-1)
    clipped = tf.concat([clipped[:, :2],
                         tf.maximum(clipped[:, 2:], clipped[:, :2])], axis=-1)
    keep2 = box_candidates(boxes2, clipped)
    labels1 = tf.where(keep1 & (labels1 >= 0), labels1, -1)
    labels2 = tf.where(keep2 & (labels2 >= 0), labels2, -1)
    return (image, tf.concat([shrunk, clipped], axis=0),
            tf.concat([labels1, labels2], axis=0))
