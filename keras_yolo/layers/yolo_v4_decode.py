"""`YoloV4Decode`: YOLOv4 head outputs to boxes, objectness and class probabilities."""

import keras
import tensorflow as tf

from keras_yolo import anchors as default_anchors
from keras_yolo import boxes as box_ops
from keras_yolo.layers.flatten import flatten_cells

# AlexeyAB darknet cfg/yolov4.cfg: scale_x_y of the P3, P4, P5 [yolo] layers.
YOLOV4_SCALE_X_Y = (1.2, 1.1, 1.05)
# t_w, t_h are clipped to ±20 before exp: a box e^20 = 4.9e8 anchors wide
# overlaps nothing, and every size (and each IoU, area and squared distance
# built from it, in pixels) stays finite and > 0 in float32. Darknet's
# exp(t_w) overflows float32 above 88.7 and its IoU products already near 30.
MAX_LOG_SCALE = 20.0


def level_list(value, num_levels, name):
    """A float or a sequence of `num_levels` floats as a tuple of floats."""
    if isinstance(value, (int, float)):
        return (float(value),) * num_levels
    value = tuple(float(v) for v in value)
    if len(value) != num_levels:
        raise ValueError(
            f"`{name}` needs one value per level ({num_levels}); got {value}."
        )
    return value


def decode_level(raw, anchors, stride, scale_x_y):
    """Decodes one level to relative centre boxes (darknet's `get_yolo_box`).

        x = (c_x + scale_x_y * logistic(t_x) - (scale_x_y - 1) / 2) / W
        y = (c_y + scale_x_y * logistic(t_y) - (scale_x_y - 1) / 2) / H
        w = p_w e^{t_w} / (W * stride),   h = p_h e^{t_h} / (H * stride)

    with `t_w, t_h` clipped to `±MAX_LOG_SCALE` (20) first, so that any
    finite raw output gives a finite box of positive size (beyond the clip
    the size, and the loss through it, has no gradient in `t_w`).

    Args:
        raw: `(B, H, W, A, 5 + C)` float32 raw head output.
        anchors: `(A, 2)` anchor `(w, h)` in input pixels.
        stride: the level's stride; the image is `(H * stride, W * stride)`.
        scale_x_y: the grid-sensitivity scale of this level.

    Returns:
        `(B, H, W, A, 4)` boxes in `rel_center_xywh`.
    """
    grid_h = tf.shape(raw)[1]
    grid_w = tf.shape(raw)[2]
    fh = tf.cast(grid_h, raw.dtype)
    fw = tf.cast(grid_w, raw.dtype)
    cols = tf.cast(tf.range(grid_w), raw.dtype)[None, None, :, None]
    rows = tf.cast(tf.range(grid_h), raw.dtype)[None, :, None, None]
    offset = scale_x_y * tf.sigmoid(raw[..., 0:2]) - 0.5 * (scale_x_y - 1.0)
    x = (cols + offset[..., 0]) / fw
    y = (rows + offset[..., 1]) / fh
    anchors = tf.cast(anchors, raw.dtype)
    t_wh = tf.clip_by_value(raw[..., 2:4], -MAX_LOG_SCALE, MAX_LOG_SCALE)
    w = tf.exp(t_wh[..., 0]) * anchors[:, 0] / (fw * stride)
    h = tf.exp(t_wh[..., 1]) * anchors[:, 1] / (fh * stride)
    return tf.stack([x, y, w, h], axis=-1)


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV4Decode(keras.layers.Layer):
    """Decodes YOLOv4 head outputs (Bochkovskiy et al. 2020).

        x = (scale(logistic(t_x)) + c_x) / W,  scale(s) = scale_x_y * s - (scale_x_y - 1) / 2
        y = (scale(logistic(t_y)) + c_y) / H
        w = p_w e^{t_w},  h = p_h e^{t_h},  C = logistic(t_o),  p(c_k) = logistic(c_k)

    `scale_x_y > 1` ("eliminate grid sensitivity") lets a centre reach the
    cell borders and `(scale_x_y - 1) / 2` beyond them. `t_w, t_h` are
    clipped to `±MAX_LOG_SCALE` (20) before `exp`, so any finite raw output
    decodes to a finite box (darknet's `exp` overflows to inf / NaN boxes).

    Args:
        anchors: `(L, A, 2)` anchor `(w, h)` in input pixels, levels in
            ascending stride. Default: `cfg/yolov4.cfg`'s nine anchors.
        strides: stride of each level, default `(8, 16, 32)`.
        scale_x_y: one float per level (or one for all), default
            `(1.2, 1.1, 1.05)` as in `cfg/yolov4.cfg`.
        bounding_box_format: format of the output boxes; pixel formats are
            in pixels of the input image `(H * stride, W * stride)`.
        num_classes: optional C; when given, each level's last axis must be
            `5 + C` (a mismatch is named instead of decoding garbage).

    Input: a list of `L` raw outputs `(B, H_l, W_l, A, 5 + C)`.
    Output: `{"boxes": (B, N, 4), "objectness": (B, N), "class_probs": (B, N, C)}`
    with `N = sum_l H_l W_l A`, levels in order, then rows, columns, anchors.

    Example:
        >>> decode = YoloV4Decode(bounding_box_format="xyxy")
        >>> out = decode(model(images))   # out["boxes"]: (B, N, 4) pixels
    """

    def __init__(self, anchors=None, strides=(8, 16, 32),
                 scale_x_y=YOLOV4_SCALE_X_Y,
                 bounding_box_format="rel_center_xywh", num_classes=None,
                 **kwargs):
        super().__init__(**kwargs)
        box_ops._check_format("bounding_box_format", bounding_box_format)
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
        self.num_classes = None if num_classes is None else int(num_classes)
        if anchors is None:
            anchors = default_anchors.YOLOV4_ANCHORS
        self.anchors = [[[float(v) for v in a] for a in level]
                        for level in anchors]
        self.strides = tuple(int(s) for s in strides)
        if len(self.strides) != len(self.anchors):
            raise ValueError(
                f"`strides` needs one value per anchor level "
                f"({len(self.anchors)}); got {strides}."
            )
        self.scale_x_y = level_list(scale_x_y, len(self.anchors), "scale_x_y")
        self.bounding_box_format = bounding_box_format

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        if len(inputs) != len(self.anchors):
            raise ValueError(
                f"YoloV4Decode expects {len(self.anchors)} levels; got "
                f"{len(inputs)}."
            )
        all_boxes, all_obj, all_cls = [], [], []
        image_shape = None
        for raw, anchors, stride, scale in zip(inputs, self.anchors,
                                               self.strides, self.scale_x_y):
            raw = tf.cast(raw, tf.float32)
            want = (len(anchors), None if self.num_classes is None
                    else 5 + self.num_classes)
            for axis, size in zip((3, 4), want):
                if size is not None and raw.shape[axis] not in (None, size):
                    raise ValueError(
                        f"YoloV4Decode needs {size} channels on axis {axis} "
                        f"({len(anchors)} anchors, num_classes="
                        f"{self.num_classes}); got raw shape {raw.shape}.")
            if image_shape is None:
                image_shape = (tf.shape(raw)[1] * stride,
                               tf.shape(raw)[2] * stride)
            boxes = decode_level(raw, anchors, stride, scale)
            all_boxes.append(flatten_cells(boxes))
            all_obj.append(flatten_cells(tf.sigmoid(raw[..., 4])))
            all_cls.append(flatten_cells(tf.sigmoid(raw[..., 5:])))
        boxes = tf.concat(all_boxes, axis=1)
        boxes = box_ops.convert(boxes, "rel_center_xywh",
                                self.bounding_box_format, image_shape)
        return {"boxes": boxes, "objectness": tf.concat(all_obj, axis=1),
                "class_probs": tf.concat(all_cls, axis=1)}

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, strides=list(self.strides),
                      scale_x_y=list(self.scale_x_y),
                      bounding_box_format=self.bounding_box_format,
                      num_classes=self.num_classes)
        return config
