"""The anchor-grid decode of YOLOv2 to YOLOv5: raw head values to boxes.

One level's raw output `(B, H, W, A, 5 + C)` holds, for the cell in column
`c_x`, row `c_y` and the anchor `(p_w, p_h)` (pixels), `[t_x, t_y, t_w, t_h,
t_o, c_0 ...]`. Every version decodes it as

    x = (c_x + s σ(t_x) - (s - 1) / 2) / W,   y = (c_y + s σ(t_y) - (s - 1) / 2) / H
    w = p_w f(t_w) / (W stride),              h = p_h f(t_h) / (H stride)

(fractions of the `(H stride, W stride)` input image; `units="pixels"` gives
the same box in input pixels), and differs only in

| version | s = `scale_x_y`     | f = `size`                          | classes |
| ------- | ------------------- | ----------------------------------- | ------- |
| v2      | 1                   | `"exp"`: e^t, t clipped to ±20      | softmax |
| v3      | 1                   | `"exp"`                             | sigmoid |
| v4      | 1.2, 1.1, 1.05      | `"exp"`                             | sigmoid |
| v5      | 2                   | `"square_sigmoid"`: (2 σ(t))²       | sigmoid |

The decode layers (`keras_yolo.layers.YoloV2Decode` ... `YoloV5Decode`) and
the losses call these functions, so a prediction is decoded the same way in
training and in inference.

Example:
    >>> boxes = decode_boxes(raw, anchors=[[10., 13.], [16., 30.]], stride=8,
    ...                      scale_x_y=1.2)   # (B, H, W, 2, 4) rel_center_xywh
"""

import numpy as np
import tensorflow as tf

# Bound on t_w, t_h before exp: a box e^20 = 4.9e8 anchors wide overlaps
# nothing, yet its squared pixel area stays inside float32, so IoUs, NMS and
# the losses never see inf (darknet's exp overflows above t = 88.7, and its
# IoU products much earlier). Trained heads stay within |t| < 10.
MAX_LOG_SCALE = 20.0
# AlexeyAB darknet cfg/yolov4.cfg: scale_x_y of the P3, P4, P5 [yolo] layers.
YOLOV4_SCALE_X_Y = (1.2, 1.1, 1.05)
# YOLOv5 (and scaled-YOLOv4): `2 σ(t) - 0.5` lets a centre reach -0.5 .. 1.5
# cells, so the neighbouring cells its assigner trains can predict it.
YOLOV5_SCALE_X_Y = 2.0
SIZES = ("exp", "square_sigmoid")
UNITS = ("relative", "pixels")
CLASS_ACTIVATIONS = ("sigmoid", "softmax")


def box_sizes(t_wh, anchors, size="exp", max_log_scale=MAX_LOG_SCALE):
    """Box sizes from raw `t_w, t_h` and the anchors, in the anchors' units.

    Args:
        t_wh: `(..., A, 2)` raw `t_w, t_h`.
        anchors: `(A, 2)` anchor `(w, h)`, any units.
        size: `"exp"`: `p e^t` with `t` clipped to `±max_log_scale`, so every
            size is finite and positive (`None`: no clip); `"square_sigmoid"`:
            `p (2 σ(t))²`, between 0 and 4 anchors.

    Returns:
        `(..., A, 2)` sizes, dtype of `t_wh`.

    Example:
        >>> box_sizes(tf.zeros([1, 2]), [[3., 4.]])   # [[3., 4.]]
    """
    if size not in SIZES:
        raise ValueError(f"`size` must be one of {SIZES}; got {size!r}.")
    anchors = tf.cast(anchors, t_wh.dtype)
    if size == "square_sigmoid":
        return tf.square(tf.sigmoid(t_wh) * 2.0) * anchors
    if max_log_scale is not None:
        t_wh = tf.clip_by_value(t_wh, -max_log_scale, max_log_scale)
    return tf.exp(t_wh) * anchors


def _grid_dims(raw):
    """`(H, W)` of a level: static ints when known, run-time otherwise."""
    height, width = raw.shape[1], raw.shape[2]
    dynamic = tf.shape(raw)
    return (dynamic[1] if height is None else height,
            dynamic[2] if width is None else width)


def decode_boxes(raw, anchors, stride, scale_x_y=1.0, size="exp",
                 max_log_scale=MAX_LOG_SCALE, units="relative"):
    """Centre boxes of one level from its raw output (formula above).

    Args:
        raw: `(B, H, W, A, 5 + C)` raw output (only `[..., :4]` is read);
            the batch and grid may be known only at run time.
        anchors: `(A, 2)` anchor `(w, h)` in input pixels.
        stride: input pixels per grid cell.
        scale_x_y: the centre scale `s` (grid sensitivity).
        size: `"exp"` or `"square_sigmoid"` (see `box_sizes`).
        max_log_scale: clip of `t_w, t_h` for `"exp"`.
        units: `"relative"` gives `rel_center_xywh` fractions of the
            `(H stride, W stride)` image, `"pixels"` `center_xywh` pixels.

    Returns:
        `(B, H, W, A, 4)` boxes, in the dtype of `raw`.

    Example:
        >>> decode_boxes(tf.zeros([1, 13, 13, 5, 25]), anchors, 32)[0, 0, 0, 0]
        # [0.5 / 13, 0.5 / 13, p_w / 416, p_h / 416]
    """
    if units not in UNITS:
        raise ValueError(f"`units` must be one of {UNITS}; got {units!r}.")
    height, width = _grid_dims(raw)
    fh = tf.cast(height, raw.dtype)
    fw = tf.cast(width, raw.dtype)
    cols = tf.cast(tf.range(width), raw.dtype)[None, None, :, None]
    rows = tf.cast(tf.range(height), raw.dtype)[None, :, None, None]
    offset = tf.sigmoid(raw[..., 0:2])
    if scale_x_y != 1.0:
        offset = scale_x_y * offset - 0.5 * (scale_x_y - 1.0)
    wh = box_sizes(raw[..., 2:4], anchors, size, max_log_scale)
    if units == "pixels":
        x = (cols + offset[..., 0]) * stride
        y = (rows + offset[..., 1]) * stride
        return tf.stack([x, y, wh[..., 0], wh[..., 1]], axis=-1)
    x = (cols + offset[..., 0]) / fw
    y = (rows + offset[..., 1]) / fh
    return tf.stack([x, y, wh[..., 0] / (fw * stride),
                     wh[..., 1] / (fh * stride)], axis=-1)


def decode_level(raw, anchors, stride, scale_x_y=1.0, size="exp",
                 max_log_scale=MAX_LOG_SCALE, units="relative",
                 class_activation="sigmoid", nan_to_zero=False):
    """Boxes, objectness and class probabilities of one level.

    Args:
        raw, anchors, stride, scale_x_y, size, max_log_scale, units: as
            `decode_boxes`.
        class_activation: `"sigmoid"` (independent classes, v3-v5) or
            `"softmax"` (v2).
        nan_to_zero: a NaN raw value (a diverged model) decodes as 0 after
            its activation: an empty box with zero objectness, never a NaN
            detection (v5's inference decode).

    Returns:
        dict of `"boxes"` `(B, H, W, A, 4)` (as `decode_boxes`),
        `"objectness"` `(B, H, W, A)` `σ(t_o)` and `"class_probs"`
        `(B, H, W, A, C)`.

    Example:
        >>> out = decode_level(raw, anchors, 32, class_activation="softmax")
        >>> out["class_probs"].shape   # (B, 13, 13, 5, C)
    """
    if class_activation not in CLASS_ACTIVATIONS:
        raise ValueError(f"`class_activation` must be one of "
                         f"{CLASS_ACTIVATIONS}; got {class_activation!r}.")
    if nan_to_zero:
        raw = tf.where(tf.math.is_nan(raw), -np.inf, raw)  # σ(-inf) = 0
    boxes = decode_boxes(raw, anchors, stride, scale_x_y, size,
                         max_log_scale, units)
    classes = raw[..., 5:]
    probs = (tf.nn.softmax(classes, axis=-1) if class_activation == "softmax"
             else tf.sigmoid(classes))
    return {"boxes": boxes, "objectness": tf.sigmoid(raw[..., 4]),
            "class_probs": probs}


def level_list(value, num_levels, name):
    """A float or a sequence of `num_levels` floats as a tuple of floats.

    Example:
        >>> level_list(1.1, 3, "scale_x_y")   # (1.1, 1.1, 1.1)
    """
    if isinstance(value, (int, float)):
        return (float(value),) * num_levels
    value = tuple(float(v) for v in value)
    if len(value) != num_levels:
        raise ValueError(
            f"`{name}` needs one value per level ({num_levels}); got {value}."
        )
    return value


def level_anchors(anchors, masks, num_levels):
    """All anchors `(K, 2)` and each level's anchor indices from anchors and masks.

    Without `masks`, `anchors` is `(levels, A, 2)` and level l owns row l;
    with `masks` (darknet's [yolo] `mask=`), `anchors` is flattened to the
    full list and level l owns `anchors[masks[l]]`.

    Returns:
        `(flat (K, 2) float32 array, masks)`, `masks` a list of index lists.

    Example:
        >>> flat, masks = level_anchors(YOLOV3_ANCHORS, None, 3)
        >>> masks   # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    """
    flat = np.asarray(anchors, np.float32).reshape(-1, 2)
    if masks is None:
        per_level = np.asarray(anchors, np.float32)
        if per_level.ndim != 3 or per_level.shape[0] != num_levels:
            raise ValueError(
                f"`anchors` must be (levels={num_levels}, anchors_per_level, "
                f"2) when `masks` is None; got shape {per_level.shape}.")
        size = per_level.shape[1]
        masks = [list(range(l * size, (l + 1) * size)) for l in range(num_levels)]
    masks = [[int(i) for i in m] for m in masks]
    if len(masks) != num_levels:
        raise ValueError(f"`masks` must have one entry per level "
                         f"({num_levels}); got {masks}.")
    for m in masks:
        if not m or min(m) < 0 or max(m) >= len(flat):
            raise ValueError(f"`masks` index anchors 0..{len(flat) - 1}; "
                             f"got {masks}.")
    if np.any(flat <= 0):
        raise ValueError(f"`anchors` must be positive pixel sizes; got "
                         f"{flat.tolist()}.")
    return flat, masks


def single_level_anchors(anchors, strides):
    """Checks YOLOv2's one level: `(1, A, 2)` (or `(A, 2)`) positive pixel
    anchors and `strides=(s,)`; returns `(anchors (A, 2) list, s)`.

    Example:
        >>> single_level_anchors([[[10., 13.], [16., 30.]]], (32,))
        ([[10.0, 13.0], [16.0, 30.0]], 32)
    """
    array = np.asarray(anchors, np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] != 1 or array.shape[2] != 2:
        raise ValueError(
            "`anchors` must have shape (1, A, 2) (one level of (w, h) in "
            f"input pixels); got shape {array.shape}."
        )
    if not np.all(array > 0):
        raise ValueError(f"`anchors` must be positive; got {array.tolist()}.")
    strides = tuple(int(s) for s in strides)
    if len(strides) != 1 or strides[0] <= 0:
        raise ValueError(
            f"YOLOv2 has one level: `strides` must be one positive int; got "
            f"{strides}."
        )
    return array[0].tolist(), strides[0]
