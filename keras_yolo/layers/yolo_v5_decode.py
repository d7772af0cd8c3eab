"""`YoloV5Decode`: raw YOLOv5 head outputs to boxes, objectness, class probabilities."""

import keras
import numpy as np
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.anchors import STRIDES, YOLOV5_ANCHORS

# ultralytics' grid offset: `2 sigmoid(t) - 0.5` lets a centre reach
# -0.5 .. 1.5 cells, so the neighbouring cells chosen by build_targets can
# predict it.
GRID_OFFSET = 0.5


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV5Decode(keras.layers.Layer):
    """Decodes YOLOv5 head outputs as ultralytics' `Detect` does at inference.

    For the cell `(g_x, g_y)`, anchor `(a_w, a_h)` (pixels) and stride `s`
    of a level:

        b_xy = (2 sigmoid(t_xy) - 0.5 + g_xy) * s
        b_wh = (2 sigmoid(t_wh))^2 * a_wh
        p_o  = sigmoid(t_o),   p_c = sigmoid(c_c)

    Args:
        anchors: `(levels, A, 2)` anchor `(w, h)` in input pixels, levels in
            ascending stride (default yolov5's P3/P4/P5 anchors).
        strides: stride of each level, ascending (default `(8, 16, 32)`).
        bounding_box_format: format of the returned boxes; relative formats
            are fractions of the input image, `(H_l * s_l, W_l * s_l)`.
        num_classes: optional C; when given, inputs with other than
            `5 + C` channels are refused with an error naming the level
            (otherwise C is read from the input).

    Input: the list of level outputs `(B, H_l, W_l, A, 5 + C)` (any float
    dtype, any input size; one tensor is accepted for a single level).
    Output: `{"boxes": (B, N, 4), "objectness": (B, N), "class_probs":
    (B, N, C)}` float32, `N = sum_l H_l W_l A`, ordered by level, then row,
    column, anchor. The batch and grid may be known only at run time. Every
    output is finite for any raw input: activations are bounded, and a NaN
    raw value decodes as 0 (an empty box with zero objectness).

    Example:
        >>> decode = YoloV5Decode(bounding_box_format="center_xywh")
        >>> out = decode([p3, p4, p5])   # from a 640x640 input
        >>> out["boxes"].shape           # (B, 25200, 4)
    """

    def __init__(self, anchors=YOLOV5_ANCHORS, strides=STRIDES,
                 bounding_box_format="center_xywh", num_classes=None,
                 **kwargs):
        super().__init__(**kwargs)
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
        anchors = np.asarray(anchors, np.float32)
        if anchors.ndim != 3 or anchors.shape[-1] != 2:
            raise ValueError(
                "`anchors` must have shape (levels, anchors_per_level, 2); "
                f"got shape {anchors.shape}."
            )
        if len(strides) != anchors.shape[0]:
            raise ValueError(
                f"`strides` must give one stride per anchor level "
                f"({anchors.shape[0]}); got strides={tuple(strides)}."
            )
        box_ops._check_format("bounding_box_format", bounding_box_format)
        self.anchors = anchors.tolist()
        self.strides = tuple(int(s) for s in strides)
        self.bounding_box_format = bounding_box_format
        self.num_classes = None if num_classes is None else int(num_classes)

    def _decode_level(self, raw, level):
        raw = tf.cast(raw, tf.float32)
        _, height, width, num_anchors, channels = raw.shape
        dynamic = tf.shape(raw)
        height = dynamic[1] if height is None else height
        width = dynamic[2] if width is None else width
        if (self.num_classes is not None
                and channels != 5 + self.num_classes):
            raise ValueError(
                f"level {level} has {channels} channels per anchor; "
                f"expected 5 + num_classes = {5 + self.num_classes}.")
        stride = float(self.strides[level])
        anchors = tf.constant(self.anchors[level], tf.float32)
        if anchors.shape[0] != num_anchors:
            raise ValueError(
                f"level {level} has {num_anchors} anchors per cell but "
                f"`anchors[{level}]` has {anchors.shape[0]}."
            )
        gx = tf.range(width, dtype=tf.float32) - GRID_OFFSET
        gy = tf.range(height, dtype=tf.float32) - GRID_OFFSET
        grid = tf.stack(tf.meshgrid(gx, gy), axis=-1)[None, :, :, None, :]
        act = tf.sigmoid(raw)
        # A NaN raw output (a diverged model) decodes as an empty box with
        # zero objectness: no detection, never a NaN one.
        act = tf.where(tf.math.is_nan(act), 0.0, act)
        xy = (act[..., 0:2] * 2.0 + grid) * stride
        wh = tf.square(act[..., 2:4] * 2.0) * anchors
        batch = dynamic[0]
        n = height * width * num_anchors
        boxes = tf.reshape(tf.concat([xy, wh], -1), [batch, n, 4])
        if self.bounding_box_format != "center_xywh":
            image_hw = (tf.cast(height, tf.float32) * stride,
                        tf.cast(width, tf.float32) * stride)
            boxes = box_ops.convert(
                boxes, "center_xywh", self.bounding_box_format,
                image_shape=image_hw)
        return (boxes, tf.reshape(act[..., 4], [batch, n]),
                tf.reshape(act[..., 5:], [batch, n, channels - 5]))

    def call(self, inputs):
        levels = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if len(levels) != len(self.strides):
            raise ValueError(
                f"expected {len(self.strides)} levels (one per stride "
                f"{self.strides}); got {len(levels)}."
            )
        parts = [self._decode_level(raw, i) for i, raw in enumerate(levels)]
        return {
            "boxes": tf.concat([p[0] for p in parts], axis=1),
            "objectness": tf.concat([p[1] for p in parts], axis=1),
            "class_probs": tf.concat([p[2] for p in parts], axis=1),
        }

    def compute_output_spec(self, inputs):
        levels = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        batch = levels[0].shape[0]
        dims = [x.shape[1:4] for x in levels]
        n = (None if any(d is None for shape in dims for d in shape)
             else sum(int(np.prod(shape)) for shape in dims))
        c = levels[0].shape[-1] - 5
        return {
            "boxes": keras.KerasTensor((batch, n, 4), "float32"),
            "objectness": keras.KerasTensor((batch, n), "float32"),
            "class_probs": keras.KerasTensor((batch, n, c), "float32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, strides=self.strides,
                      bounding_box_format=self.bounding_box_format,
                      num_classes=self.num_classes)
        return config
