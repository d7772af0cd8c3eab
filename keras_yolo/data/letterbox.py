"""Letterbox resize (keep the aspect ratio, pad with gray) and its inverse.

The image is scaled by `r = size / max(height, width)` (up or down, as
ultralytics' `load_image` + `LetterBox` do for validation), rounded to whole
pixels, and centred on a `size x size` canvas of gray 114/255; the odd pixel
of padding goes to the bottom / right, as in ultralytics.

`params` records the mapping per image, a float32 `(..., 6)` tensor:
`[scale_x, scale_y, pad_x, pad_y, width, height]` (scales from original to
letterboxed pixels, left / top padding in letterboxed pixels, original size).
`letterbox_boxes` maps original `xyxy` pixels into the letterboxed image and
`unletterbox_boxes` maps them back (clipped to the original image); both are
plain arithmetic on tensors, graph-safe and XLA-compilable, so the evaluator
and the exported model share them.
"""

import tensorflow as tf

PAD_VALUE = 114.0 / 255.0  # ultralytics' letterbox gray
PARAMS = ("scale_x", "scale_y", "pad_x", "pad_y", "width", "height")


def letterbox(image, size):
    """Letterboxes one image to `(size, size, 3)`.

    Args:
        image: `(H, W, 3)` tensor, uint8 (0-255) or float (0-1), any H, W
            (known or not until run time).
        size: int, the square output side.

    Returns:
        `(image, params)`: `(size, size, 3)` float32 in [0, 1] and `(6,)`
        float32 `[scale_x, scale_y, pad_x, pad_y, width, height]`.

    Example:
        >>> image = tf.zeros((480, 640, 3), tf.uint8)
        >>> boxed, params = letterbox(image, 320)   # 320x240 scaled, 40 px
        >>> params.numpy()                          # [0.5, 0.5, 0, 40, 640, 480]
    """
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    else:
        image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    size_f = tf.cast(size, tf.float32)
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ratio = size_f / tf.maximum(h_f, w_f)
    new_h = tf.clip_by_value(tf.cast(tf.round(h_f * ratio), tf.int32), 1, size)
    new_w = tf.clip_by_value(tf.cast(tf.round(w_f * ratio), tf.int32), 1, size)
    resized = resize(image, new_h, new_w)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    padded = tf.pad(resized - PAD_VALUE,
                    [[top, size - new_h - top], [left, size - new_w - left],
                     [0, 0]]) + PAD_VALUE
    padded = tf.clip_by_value(tf.ensure_shape(padded, (size, size, 3)),
                              0.0, 1.0)
    new_w_f, new_h_f = tf.cast(new_w, tf.float32), tf.cast(new_h, tf.float32)
    params = tf.stack([new_w_f / w_f, new_h_f / h_f, tf.cast(left, tf.float32),
                       tf.cast(top, tf.float32), w_f, h_f])
    return padded, params


def resize(image, height, width):
    """Float `(H, W, C)` image to `(height, width, C)` as ultralytics does:
    unchanged at the same size, area averaging when shrinking (cv2's
    INTER_AREA), bilinear when enlarging (INTER_LINEAR)."""
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1],
                                                               width))
    shrink = tf.logical_and(tf.less_equal(height, shape[0]),
                            tf.less_equal(width, shape[1]))
    size = tf.stack([height, width])
    return tf.case([
        (same, lambda: image),
        (shrink, lambda: tf.image.resize(image, size, method="area")),
    ], default=lambda: tf.image.resize(image, size, method="bilinear"))


def letterbox_boxes(boxes, params):
    """Original `xyxy` pixels -> letterboxed `xyxy` pixels.

    Args:
        boxes: `(..., N, 4)` `xyxy` pixels of the original image.
        params: `(..., 6)` from `letterbox`.

    Returns:
        `(..., N, 4)` float32 `xyxy` pixels of the letterboxed image.
    """
    scale, offset = _affine(params)
    return tf.cast(boxes, tf.float32) * scale + offset


def unletterbox_boxes(boxes, params):
    """Letterboxed `xyxy` pixels -> `xyxy` pixels of the original image,
    clipped to it (the inverse of `letterbox_boxes` inside the image).

    Args:
        boxes: `(..., N, 4)` `xyxy` pixels of the letterboxed image (e.g.
            detections of a model fed `letterbox` output).
        params: `(..., 6)` from `letterbox` (batched: `(B, 6)` with boxes
            `(B, N, 4)`).

    Returns:
        `(..., N, 4)` float32 `xyxy` pixels of the original image.

    Example:
        >>> image, params = letterbox(original, 640)
        >>> detections = detector(image[None])            # xyxy, 640 px
        >>> boxes = unletterbox_boxes(detections["boxes"][0], params)
    """
    params = tf.cast(params, tf.float32)
    scale, offset = _affine(params)
    original = (tf.cast(boxes, tf.float32) - offset) / scale
    width, height = params[..., None, 4:5], params[..., None, 5:6]
    upper = tf.concat([width, height, width, height], axis=-1)
    return tf.minimum(tf.maximum(original, 0.0), upper)


def _affine(params):
    params = tf.cast(params, tf.float32)[..., None, :]  # (..., 1, 6)
    sx, sy, px, py = (params[..., k:k + 1] for k in range(4))
    return (tf.concat([sx, sy, sx, sy], axis=-1),
            tf.concat([px, py, px, py], axis=-1))
