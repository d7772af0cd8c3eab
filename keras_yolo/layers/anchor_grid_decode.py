"""`AnchorGridDecode`: what the YOLOv2 to YOLOv5 decode layers share.

Each version's layer is this one with its own arguments (`keras_yolo.grid`
lists the differences): it checks the levels, decodes each with
`keras_yolo.grid.decode_level`, flattens and concatenates them, and converts
the boxes to the layer's `bounding_box_format`.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo import grid
from keras_yolo.checks import check_format
from keras_yolo.layers.flatten import flatten_cells


def check_num_classes(num_classes):
    """`None` or an int >= 1 (read from the input when None)."""
    if num_classes is not None and int(num_classes) < 1:
        raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
    return None if num_classes is None else int(num_classes)


class AnchorGridDecode(keras.layers.Layer):
    """Base of the anchor-grid decode layers (not used on its own).

    Subclasses call `super().__init__` and then `configure(level_anchors,
    strides, scale_x_y, ...)` with their own defaults and checks, and keep
    their own `get_config`.

    Input: the list of level outputs `(B, H_l, W_l, A_l, 5 + C)` (any float
    dtype; one tensor for a single level); batch and grid may be known only
    at run time.
    Output: `{"boxes": (B, N, 4), "objectness": (B, N), "class_probs":
    (B, N, C)}` float32, `N = sum_l H_l W_l A_l`, ordered by level, row,
    column, anchor; boxes in `bounding_box_format` (pixel formats in pixels
    of the input image, `(H_0 stride_0, W_0 stride_0)`).
    """

    def configure(self, level_anchors, strides, bounding_box_format,
                  num_classes=None, scale_x_y=1.0, size="exp",
                  class_activation="sigmoid", nan_to_zero=False,
                  units="relative"):
        """Sets the decode: `level_anchors` a list of `(A_l, 2)` pixel
        anchors, one per stride; the rest as `keras_yolo.grid.decode_level`."""
        check_format(bounding_box_format)
        strides = tuple(int(s) for s in strides)
        if len(strides) != len(level_anchors):
            raise ValueError(
                f"`strides` needs one value per anchor level "
                f"({len(level_anchors)}); got {strides}.")
        self._level_anchors = [np.asarray(a, np.float32)
                               for a in level_anchors]
        self._decode_strides = strides
        self._scales = grid.level_list(scale_x_y, len(strides), "scale_x_y")
        self._decode_options = dict(size=size, units=units,
                                    class_activation=class_activation,
                                    nan_to_zero=nan_to_zero)
        self._native_format = ("rel_center_xywh" if units == "relative"
                               else "center_xywh")
        self._out_format = bounding_box_format
        self._classes = check_num_classes(num_classes)

    def _levels(self, inputs):
        levels = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(levels) != len(self._decode_strides):
            raise ValueError(
                f"{type(self).__name__} expects a list of "
                f"{len(self._decode_strides)} levels (one per stride "
                f"{self._decode_strides}); got {len(levels)}.")
        return levels

    def _check_level(self, raw, level):
        num_anchors = len(self._level_anchors[level])
        if raw.shape.rank != 5:
            raise ValueError(
                f"{type(self).__name__}: level {level} must be (B, H, W, "
                f"{num_anchors}, 5 + C); got shape {raw.shape}.")
        if raw.shape[3] is not None and raw.shape[3] != num_anchors:
            raise ValueError(
                f"{type(self).__name__}: level {level} has {raw.shape[3]} "
                f"anchors per cell on axis 3 but its anchors are "
                f"{self._level_anchors[level].tolist()}; got raw shape "
                f"{raw.shape}.")
        channels = raw.shape[4]
        if self._classes is not None and channels not in (
                None, 5 + self._classes):
            raise ValueError(
                f"level {level} has {channels} channels per anchor; expected "
                f"5 + num_classes = {5 + self._classes} (num_classes="
                f"{self._classes}); got raw shape {raw.shape}.")
        if raw.shape[3] is None:
            raw = tf.ensure_shape(raw, [None, None, None, num_anchors, None])
        return raw

    def call(self, inputs):
        parts = []
        image_shape = None
        for level, raw in enumerate(self._levels(inputs)):
            raw = self._check_level(tf.cast(raw, tf.float32), level)
            stride = self._decode_strides[level]
            if image_shape is None:
                image_shape = (tf.shape(raw)[1] * stride,
                               tf.shape(raw)[2] * stride)
            parts.append(grid.decode_level(
                raw, self._level_anchors[level], stride,
                scale_x_y=self._scales[level], **self._decode_options))
        out = {key: tf.concat([flatten_cells(p[key]) for p in parts], axis=1)
               for key in ("boxes", "objectness", "class_probs")}
        if self._out_format != self._native_format:
            out["boxes"] = box_ops.convert(out["boxes"], self._native_format,
                                           self._out_format, image_shape)
        return out

    def compute_output_spec(self, inputs):
        levels = self._levels(inputs)
        batch = levels[0].shape[0]
        sizes = [raw.shape[1:4] for raw in levels]
        n = (None if any(d is None for shape in sizes for d in shape)
             else sum(int(np.prod(shape)) for shape in sizes))
        channels = levels[0].shape[-1]
        c = None if channels is None else channels - 5
        return {
            "boxes": keras.KerasTensor((batch, n, 4), "float32"),
            "objectness": keras.KerasTensor((batch, n), "float32"),
            "class_probs": keras.KerasTensor((batch, n, c), "float32"),
        }
