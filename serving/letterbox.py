"""Letterbox and its inverse as graph ops (TF core only, no keras-yolo).

The serving signatures letterbox every image to the network's input size
inside the SavedModel, so they must not call the library at serving time;
these functions are the in-graph form of ultralytics' `LetterBox` and
`scale_boxes` (yolov5 / ultralytics 8):

    r = min(S_h / h, S_w / w)                       # keep the aspect ratio
    (h', w') = (round(h r), round(w r))             # resized
    top = round((S_h - h') / 2 - 0.1), left = round((S_w - w') / 2 - 0.1)
    the rest of the S_h x S_w canvas is gray 114 / 255

and a box `(x1, y1, x2, y2)` on the canvas maps back to the original image
as `((x1 - left) / r, (y1 - top) / r, ...)`, clipped to `[0, w] x [0, h]`.

The resize is area averaging when shrinking and bilinear (half-pixel
centres) when enlarging, as ultralytics' `load_image` (cv2 `INTER_AREA` /
`INTER_LINEAR`) and `keras_yolo.data.letterbox` do; it runs on floats, so it
differs from OpenCV's rounded uint8 result by < 0.5 / 255. (This module
rather than `keras_yolo.data.letterbox`: the serving signatures take batches
and non-square inputs, and their boxes map back with ultralytics'
`scale_boxes` gain `min(S_h / h, S_w / w)`.)
"""

import tensorflow as tf

# ultralytics pads letterboxed images with gray (114, 114, 114).
PAD_VALUE = 114.0 / 255.0


def letterbox_geometry(image_shape, size):
    """Scale and padding of an image of `image_shape` `(h, w)` letterboxed
    to `size` `(S_h, S_w)`.

    Returns:
        `(scale, (new_h, new_w) int32, (top, left) int32)`; scale float32.
    """
    # float64: the rounding of h * r must match Python's (ultralytics').
    h = tf.cast(image_shape[0], tf.float64)
    w = tf.cast(image_shape[1], tf.float64)
    s_h, s_w = float(size[0]), float(size[1])
    scale = tf.minimum(s_h / h, s_w / w)
    new_h = tf.round(h * scale)
    new_w = tf.round(w * scale)
    top = tf.round((s_h - new_h) / 2 - 0.1)
    left = tf.round((s_w - new_w) / 2 - 0.1)
    return (tf.cast(scale, tf.float32),
            tf.cast(tf.stack([new_h, new_w]), tf.int32),
            tf.cast(tf.stack([top, left]), tf.int32))


def letterbox(images, size):
    """Letterboxes float images to `size`.

    Args:
        images: `(H, W, 3)` or `(B, H, W, 3)` float32 in [0, 1] (one size
            for the whole batch).
        size: `(S_h, S_w)` Python ints, the network's input size.

    Returns:
        `(letterboxed (…, S_h, S_w, 3), scale () float32,
        pad (2,) float32 as (left, top))`.

    Example:
        >>> canvas, scale, pad = letterbox(tf.zeros((480, 640, 3)), (64, 64))
        >>> canvas.shape, float(scale), pad.numpy()   # (64, 64, 3), 0.1, [0, 8]
    """
    shape = tf.shape(images)
    scale, new_hw, top_left = letterbox_geometry(shape[-3:-1], size)
    # ultralytics (and keras_yolo.data.letterbox): area averaging when
    # shrinking (cv2 INTER_AREA; bilinear would alias a 12 MP photo),
    # bilinear when enlarging (INTER_LINEAR).
    resized = tf.cond(
        scale < 1.0,
        lambda: tf.image.resize(images, new_hw, method="area"),
        lambda: tf.image.resize(images, new_hw, method="bilinear"))
    bottom_right = tf.constant(list(size), tf.int32) - new_hw - top_left
    rank = len(images.shape)
    paddings = tf.stack([top_left, bottom_right], axis=1)  # (2, 2): h, w
    paddings = tf.concat([tf.zeros([rank - 3, 2], tf.int32), paddings,
                          tf.zeros([1, 2], tf.int32)], 0)
    canvas = tf.pad(resized, paddings, constant_values=PAD_VALUE)
    canvas = tf.ensure_shape(canvas, [*images.shape[:-3], *size, 3])
    pad = tf.cast(tf.reverse(top_left, [0]), tf.float32)
    return canvas, scale, pad


def unletterbox_boxes(boxes, scale, pad, image_shape):
    """Boxes `xyxy` on the letterboxed canvas -> pixels of the original
    image, clipped to it.

    Args:
        boxes: `(..., K, 4)` `xyxy`.
        scale: letterbox scale, broadcastable to `boxes[..., 0]`
            (e.g. `(B, 1)`).
        pad: `(left, top)`, broadcastable to `boxes[..., :2]` (e.g.
            `(B, 1, 2)`).
        image_shape: `(height, width)` of the original image, broadcastable
            like `pad` (e.g. `(B, 1, 2)` float32).

    Returns:
        `(..., K, 4)` float32 `xyxy` in original pixels, within
        `[0, width] x [0, height]`.
    """
    boxes = tf.cast(boxes, tf.float32)
    pad = tf.tile(pad, [1] * (len(pad.shape) - 1) + [2])
    out = (boxes - pad) / scale[..., None]
    hw = tf.cast(image_shape, tf.float32)
    limit = tf.tile(tf.reverse(hw, [-1]), [1] * (len(hw.shape) - 1) + [2])
    return tf.minimum(tf.maximum(out, 0.0), limit)
