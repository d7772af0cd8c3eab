"""`YoloV1Decode`: YOLOv1's raw output to boxes, objectness and class probabilities.

The raw layout and the two parametrisations (`"logistic"`, `"linear"`) are in
`keras_yolo.cell_grid`, shared with `YoloV1Loss`.
"""

import keras
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo import checks
from keras_yolo.cell_grid import (MAX_LINEAR_COORDINATE, ensure_raw_shape, parametrize,
                                  resolve_options, split_raw)


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV1Decode(keras.layers.Layer):
    """Decodes YOLOv1's raw output into boxes, objectness and class probabilities.

    With `σ` the logistic function and `(row, col)` the cell, each of the
    `Bx` boxes of a cell decodes to (seed parametrisation)

        x = (col + σ(t_x)) / S,  y = (row + σ(t_y)) / S,
        w = σ(t_w),  h = σ(t_h),  C = σ(t_o),  p(c_k) = softmax(c)_k

    (image fractions; `parametrization="linear"` gives darknet's
    `x = (col + t_x) / S`, `w = t_w²`, `C = t_o`, `p = c`, with `t_x, t_y,
    t_w, t_h` clipped to `±MAX_LINEAR_COORDINATE` so that boxes are always
    finite). Every box of a
    cell shares the cell's class probabilities; the score of a class is
    `objectness * class_probs` (darknet: `scale * predictions[class]`).

    Args:
        num_classes: C.
        grid_size: S.
        boxes_per_cell: the seed's B (here Bx).
        bounding_box_format: format of the output boxes.
        image_shape: `(height, width)` of the input image; required for
            pixel formats.
        parametrization: `"logistic"` (seed) or `"linear"` (darknet).
        sqrt: linear only: `t_w, t_h` are square roots (default True).
        softmax: linear only: softmax over class scores (default False).

    Input: `(B, S, S, Bx*5 + C)` raw output, any float dtype; the batch
    size may be unknown until run time.

    Output: dict of `"boxes"` `(B, S*S*Bx, 4)`, `"objectness"` `(B, S*S*Bx)`,
    `"class_probs"` `(B, S*S*Bx, C)`, float32, ordered cell by cell
    (row-major) and box by box within a cell, as darknet's
    `get_detection_boxes`.

    Example:
        >>> decode = YoloV1Decode(num_classes=20, grid_size=7, boxes_per_cell=2)
        >>> out = decode(tf.zeros([1, 7, 7, 30]))
        >>> out["boxes"].shape   # (1, 98, 4)
    """

    def __init__(self, num_classes, grid_size=7, boxes_per_cell=2,
                 bounding_box_format="rel_center_xywh", image_shape=None,
                 parametrization="logistic", sqrt=None, softmax=None,
                 **kwargs):
        super().__init__(**kwargs)
        checks.check_positive_int("num_classes", num_classes)
        checks.check_positive_int("grid_size", grid_size)
        checks.check_positive_int("boxes_per_cell", boxes_per_cell)
        checks.check_format(bounding_box_format)
        checks.check_image_shape(bounding_box_format, image_shape)
        resolve_options(parametrization, sqrt, softmax)
        self.num_classes = num_classes
        self.grid_size = grid_size
        self.boxes_per_cell = boxes_per_cell
        self.bounding_box_format = bounding_box_format
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.parametrization = parametrization
        self.sqrt = sqrt
        self.softmax = softmax

    def call(self, raw):
        s, n, c = self.grid_size, self.boxes_per_cell, self.num_classes
        raw = ensure_raw_shape(tf.cast(raw, tf.float32), s, n, c,
                               "YoloV1Decode")
        if raw.shape[1] != s or raw.shape[2] != s:
            raise ValueError(
                f"YoloV1Decode(grid_size={s}) got raw output of shape "
                f"{tuple(raw.shape)}; expected (batch, {s}, {s}, {n * 5 + c}).")
        if self.parametrization == "linear":
            boxes, classes = split_raw(raw, n, c)
            coords = tf.clip_by_value(boxes[..., :4], -MAX_LINEAR_COORDINATE,
                                      MAX_LINEAR_COORDINATE)
            boxes = tf.concat([coords, boxes[..., 4:]], axis=-1)
            raw = tf.concat([tf.reshape(boxes, [-1, s, s, n * 5]), classes],
                            axis=-1)
        p = parametrize(raw, n, c, self.parametrization, self.sqrt,
                        self.softmax)
        col = tf.range(s, dtype=tf.float32)[None, None, :, None]
        row = tf.range(s, dtype=tf.float32)[None, :, None, None]
        x = (col + p["xy"][..., 0]) / s
        y = (row + p["xy"][..., 1]) / s
        boxes = tf.stack([x, y, p["wh"][..., 0], p["wh"][..., 1]], axis=-1)
        batch = tf.shape(raw)[0]
        boxes = tf.reshape(boxes, [batch, s * s * n, 4])
        boxes = box_ops.convert(boxes, "rel_center_xywh",
                                self.bounding_box_format, self.image_shape)
        probs = tf.broadcast_to(p["class_probs"][:, :, :, None, :],
                                [batch, s, s, n, c])
        return {"boxes": boxes,
                "objectness": tf.reshape(p["confidence"], [batch, s * s * n]),
                "class_probs": tf.reshape(probs, [batch, s * s * n, c])}

    def compute_output_spec(self, raw):
        n = self.grid_size * self.grid_size * self.boxes_per_cell
        batch = raw.shape[0]
        return {
            "boxes": keras.KerasTensor((batch, n, 4), "float32"),
            "objectness": keras.KerasTensor((batch, n), "float32"),
            "class_probs": keras.KerasTensor((batch, n, self.num_classes),
                                             "float32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, grid_size=self.grid_size,
            boxes_per_cell=self.boxes_per_cell,
            bounding_box_format=self.bounding_box_format,
            image_shape=self.image_shape,
            parametrization=self.parametrization, sqrt=self.sqrt,
            softmax=self.softmax)
        return config
