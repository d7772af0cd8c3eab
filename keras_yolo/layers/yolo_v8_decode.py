"""`YoloV8Decode`: raw anchor-free YOLOv8 head outputs to boxes and class probabilities."""

import keras
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.checks import check_format, check_positive_int
from keras_yolo.assign.anchor_points import (dfl_expectation, dist2bbox,
                                             flatten_levels,
                                             make_anchor_points)

STRIDES = (8, 16, 32)
REG_MAX = 16


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV8Decode(keras.layers.Layer):
    """Decodes YOLOv8 head outputs as ultralytics 8's `Detect` in eval mode.

    For the anchor point `a = (col + 0.5, row + 0.5)` of a level of stride
    `s` and its four side distributions (softmax over `reg_max` bins):

        d = sum_i i softmax(logits_side)_i            (DFL expectation)
        box = (a - d_lt, a + d_rb) * s                (dist2bbox, pixels)
        p_c = sigmoid(c_c)

    YOLOv8 has no objectness: `"objectness"` is all ones, so the shared
    `keras_yolo.postprocess.non_max_suppression` scores a box by
    `p_o p_c = p_c`, ultralytics 8's score.

    Args:
        strides: stride of each level, ascending (default `(8, 16, 32)`).
        reg_max: DFL bins per side (16).
        num_classes: optional C; when given, inputs with other than
            `4 reg_max + C` channels are refused (otherwise C is read from
            the input).
        bounding_box_format: format of the returned boxes (default
            `center_xywh` pixels, ultralytics' output); relative formats are
            fractions of the input `(H_0 s_0, W_0 s_0)`.

    Input: the list of levels `(B, H_l, W_l, 4 reg_max + C)`, channel
    `side * reg_max + bin` for the sides (left, top, right, bottom), then
    the C class logits. Any input size; the batch and grid may be known only
    at run time.
    Output: `{"boxes": (B, N, 4), "objectness": (B, N), "class_probs":
    (B, N, C)}` float32, `N = sum_l H_l W_l`, level by level, row-major.

    Example:
        >>> decode = YoloV8Decode(num_classes=80)
        >>> out = decode([p3, p4, p5])      # from a 640x640 input
        >>> out["boxes"].shape              # (B, 8400, 4)
        >>> detections = keras_yolo.postprocess.non_max_suppression(out)
    """

    def __init__(self, strides=STRIDES, reg_max=REG_MAX, num_classes=None,
                 bounding_box_format="center_xywh", **kwargs):
        super().__init__(**kwargs)
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        check_positive_int("reg_max", reg_max)
        if reg_max < 2:
            raise ValueError(
                f"`reg_max` must be >= 2 (DFL bins); got {reg_max}.")
        check_format(bounding_box_format)
        self.strides = tuple(int(s) for s in strides)
        self.reg_max = int(reg_max)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.bounding_box_format = bounding_box_format

    def _levels(self, inputs):
        levels = list(inputs) if isinstance(inputs, (list, tuple)) else [
            inputs]
        if len(levels) != len(self.strides):
            raise ValueError(
                f"expected {len(self.strides)} levels (one per stride "
                f"{self.strides}); got {len(levels)}.")
        for i, p in enumerate(levels):
            channels = p.shape[-1]
            if channels is None or channels <= 4 * self.reg_max or (
                    self.num_classes is not None
                    and channels != 4 * self.reg_max + self.num_classes):
                expected = ("4 * reg_max + num_classes = "
                            f"{4 * self.reg_max + self.num_classes}"
                            if self.num_classes is not None
                            else f"more than 4 * reg_max = {4 * self.reg_max}")
                raise ValueError(
                    f"level {i} has {channels} channels; expected {expected}.")
        return levels

    def call(self, inputs):
        levels = [tf.cast(p, tf.float32) for p in self._levels(inputs)]
        flat, level_hw = flatten_levels(levels)
        points, stride = make_anchor_points(level_hw, self.strides)
        split = 4 * self.reg_max
        distance = dfl_expectation(flat[..., :split], self.reg_max)
        boxes = dist2bbox(distance, points, center=True) * stride
        if self.bounding_box_format != "center_xywh":
            image_shape = (tf.cast(level_hw[0][0] * self.strides[0],
                                   tf.float32),
                           tf.cast(level_hw[0][1] * self.strides[0],
                                   tf.float32))
            boxes = box_ops.convert(boxes, "center_xywh",
                                    self.bounding_box_format, image_shape)
        probs = tf.sigmoid(flat[..., split:])
        return {"boxes": boxes, "objectness": tf.ones_like(probs[..., 0]),
                "class_probs": probs}

    def compute_output_spec(self, inputs):
        levels = self._levels(inputs)
        batch = levels[0].shape[0]
        dims = [p.shape[1:3] for p in levels]
        n = (None if any(d is None for hw in dims for d in hw)
             else sum(int(h) * int(w) for h, w in dims))
        c = levels[0].shape[-1] - 4 * self.reg_max
        return {
            "boxes": keras.KerasTensor((batch, n, 4), "float32"),
            "objectness": keras.KerasTensor((batch, n), "float32"),
            "class_probs": keras.KerasTensor((batch, n, c), "float32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(strides=self.strides, reg_max=self.reg_max,
                      num_classes=self.num_classes,
                      bounding_box_format=self.bounding_box_format)
        return config
