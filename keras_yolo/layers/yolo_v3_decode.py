"""`YoloV3Decode`: YOLOv3's raw head outputs (three levels) to boxes and scores."""

import keras
import numpy as np
import tensorflow as tf

from keras_yolo import anchors as default_anchors
from keras_yolo import boxes as box_ops
from keras_yolo.layers.flatten import flatten_cells

# t_w, t_h are clipped to ±20 before exp: a box e^20 = 4.9e8 anchors wide
# overlaps nothing, and every size (and each IoU built from it) stays finite
# and > 0 in float32 (pjreddie darknet's exp overflows above 88.7).
MAX_LOG_SCALE = 20.0


def _dim(x, axis):
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def decode_level(raw, anchors, stride):
    """Boxes of one level, `rel_center_xywh`, from the raw output.

        x = (logistic(t_x) + c_x) / W,     y = (logistic(t_y) + c_y) / H,
        w = p_w e^{t_w} / (W stride),      h = p_h e^{t_h} / (H stride)

    with `(c_x, c_y)` the cell's column and row and `(p_w, p_h)` the anchor in
    pixels; the input image is `(H stride, W stride)` pixels. `t_w, t_h` are
    clipped to `±MAX_LOG_SCALE` (20) first, so any finite raw output gives a
    finite box of positive size.

    Args:
        raw: `(B, H, W, A, 5 + C)` raw head output (float32).
        anchors: `(A, 2)` this level's anchors, pixels.
        stride: pixels per grid cell.

    Returns:
        `(B, H, W, A, 4)` float32 boxes relative to the image.
    """
    height, width = _dim(raw, 1), _dim(raw, 2)
    grid_x = tf.cast(tf.range(width), tf.float32)[None, None, :, None]
    grid_y = tf.cast(tf.range(height), tf.float32)[None, :, None, None]
    size = tf.cast(tf.stack([width, height]), tf.float32)
    anchors = tf.constant(anchors, tf.float32) / (size * stride)
    t_wh = tf.clip_by_value(raw[..., 2:4], -MAX_LOG_SCALE, MAX_LOG_SCALE)
    return tf.concat([
        ((tf.sigmoid(raw[..., 0]) + grid_x) / size[0])[..., None],
        ((tf.sigmoid(raw[..., 1]) + grid_y) / size[1])[..., None],
        anchors * tf.exp(t_wh),
    ], axis=-1)


def level_anchors(anchors, masks, num_levels):
    """All anchors `(K, 2)` and each level's `(A_l, 2)` from anchors and masks.

    Without `masks`, `anchors` is `(levels, A, 2)` and level l owns row l;
    with `masks` (darknet's [yolo] `mask=`), `anchors` is flattened to the
    full list and level l owns `anchors[masks[l]]`.
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


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV3Decode(keras.layers.Layer):
    """Decodes YOLOv3's raw outputs (levels in ascending stride).

        x = logistic(t_x) + c_x,  y = logistic(t_y) + c_y  (cells, times stride)
        w = p_w e^{t_w},          h = p_h e^{t_h}          (pixels)
        C = logistic(t_o),        p(c_k) = logistic(c_k)   (multilabel)

    Args:
        anchors: `(levels, A, 2)` anchors `(w, h)` in input pixels (default:
            the nine COCO anchors of darknet's yolov3.cfg), or the full list
            when `masks` is given.
        strides: pixels per grid cell of each level.
        masks: optional darknet [yolo] masks: level l uses `anchors[masks[l]]`.
        bounding_box_format: format of the output boxes; pixel formats are in
            pixels of the input image (grid size times stride).
        num_classes: optional C; when given, each level's last axis must be
            `5 + C` (a mismatch is named instead of decoding garbage).

    Input: list of `(B, H_l, W_l, A, 5 + C)` raw outputs, one per level.
    Output: `{"boxes": (B, N, 4), "objectness": (B, N), "class_probs": (B, N, C)}`
    with `N = sum_l H_l W_l A`, ordered level, row, column, anchor.

    Example:
        >>> decode = YoloV3Decode(bounding_box_format="xyxy")
        >>> out = decode([p3, p4, p5])   # (B,52,52,3,85), (B,26,26,3,85), ...
        >>> out["boxes"].shape           # (B, 10647, 4)
    """

    def __init__(self, anchors=default_anchors.YOLOV3_ANCHORS,
                 strides=default_anchors.STRIDES, masks=None,
                 bounding_box_format="rel_center_xywh", num_classes=None,
                 **kwargs):
        super().__init__(**kwargs)
        box_ops._check_format("bounding_box_format", bounding_box_format)
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.strides = tuple(int(s) for s in strides)
        self.all_anchors, self.masks = level_anchors(anchors, masks,
                                                     len(self.strides))
        self.anchors = np.asarray(anchors, np.float32).tolist()
        self._masks_arg = None if masks is None else self.masks
        self.bounding_box_format = bounding_box_format

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != len(
                self.strides):
            raise ValueError(
                f"YoloV3Decode expects a list of {len(self.strides)} levels; "
                f"got {type(inputs).__name__} of length "
                f"{len(inputs) if isinstance(inputs, (list, tuple)) else 1}.")
        boxes, objectness, probs = [], [], []
        for raw, mask, stride in zip(inputs, self.masks, self.strides):
            raw = tf.cast(raw, tf.float32)
            if raw.shape[3] is not None and raw.shape[3] != len(mask):
                raise ValueError(
                    f"a level with anchors {mask} needs {len(mask)} anchors "
                    f"on axis 3; got raw shape {raw.shape}.")
            if self.num_classes is not None and raw.shape[4] not in (
                    None, 5 + self.num_classes):
                raise ValueError(
                    f"`num_classes={self.num_classes}` needs "
                    f"{5 + self.num_classes} channels on axis 4; got raw "
                    f"shape {raw.shape}.")
            level = decode_level(raw, self.all_anchors[mask], stride)
            boxes.append(flatten_cells(level))
            objectness.append(flatten_cells(tf.sigmoid(raw[..., 4])))
            probs.append(flatten_cells(tf.sigmoid(raw[..., 5:])))
        boxes = tf.concat(boxes, axis=1)
        if self.bounding_box_format != "rel_center_xywh":
            raw = inputs[0]
            image_shape = (_dim(raw, 1) * self.strides[0],
                           _dim(raw, 2) * self.strides[0])
            boxes = box_ops.convert(boxes, "rel_center_xywh",
                                    self.bounding_box_format,
                                    image_shape=image_shape)
        return {"boxes": boxes, "objectness": tf.concat(objectness, axis=1),
                "class_probs": tf.concat(probs, axis=1)}

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, strides=list(self.strides),
                      masks=self._masks_arg,
                      bounding_box_format=self.bounding_box_format,
                      num_classes=self.num_classes)
        return config
