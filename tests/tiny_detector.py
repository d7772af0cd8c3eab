"""A tiny one-level detector for the training and serving tests.

Not a YOLO version: a 3-conv backbone (stride 8), one anchor per cell, and a
deliberately simple loss, so the tests of strategies, checkpoints and export
do not depend on the library's models and losses.

    L = 1/B [ Σ_cells BCE(σ(t_o), 1obj) + Σ_obj ‖σ(t_xy) − frac(g_xy S)‖²
              + Σ_obj ‖t_wh − log(g_wh S)‖² + Σ_obj CE(c, softmax(t_c)) ]

with the truth of a cell the last truth whose centre falls in it.
"""

import keras
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.models import YoloModel

STRIDE = 8


def build_tiny_model(image_size=64, num_classes=3, width=16, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same",
                                activation="relu", name=f"conv{i}")(x)
    x = keras.layers.Conv2D(4 * width, 3, padding="same", activation="relu",
                            name="conv3")(x)
    x = keras.layers.Conv2D(5 + num_classes, 1, name="head")(x)
    cells = image_size // STRIDE
    out = keras.layers.Reshape((cells, cells, 1, 5 + num_classes))(x)
    return YoloModel(inputs, out, name="tiny")


@keras.saving.register_keras_serializable(package="keras_yolo_tests")
class TinyLoss(keras.losses.Loss):
    def __init__(self, num_classes=3, bounding_box_format="rel_center_xywh",
                 name="tiny_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.bounding_box_format = bounding_box_format

    def call(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        _, h, w, _, _ = y_pred.shape
        batch = tf.cast(tf.shape(y_pred)[0], tf.float32)
        boxes = box_ops.convert(y_true["boxes"], self.bounding_box_format,
                                "rel_center_xywh",
                                image_shape=(h * STRIDE, w * STRIDE))
        labels = tf.cast(y_true["labels"], tf.int32)
        valid = labels >= 0
        m = labels.shape[1]
        gx = tf.clip_by_value(tf.floor(boxes[..., 0] * w), 0, w - 1)
        gy = tf.clip_by_value(tf.floor(boxes[..., 1] * h), 0, h - 1)
        cell = tf.cast(gy * w + gx, tf.int32)                       # (B, M)
        resp = (cell[..., None] == tf.range(h * w)) & valid[..., None]
        # last responsible truth of each cell, deterministically
        rank = tf.where(resp, tf.range(1, m + 1)[None, :, None], 0)
        owner = tf.argmax(rank, axis=1, output_type=tf.int32)       # (B, HW)
        has = tf.reduce_any(resp, axis=1)                           # (B, HW)
        tbox = tf.gather(boxes, owner, batch_dims=1)                # (B, HW, 4)
        tcls = tf.gather(labels, owner, batch_dims=1)
        p = tf.reshape(y_pred[..., 0, :], (-1, h * w, 5 + self.num_classes))
        obj = tf.cast(has, tf.float32)
        l_obj = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=obj, logits=p[..., 4]))
        grid = tf.cast(tf.stack([tf.range(h * w) % w, tf.range(h * w) // w],
                                -1), tf.float32)
        frac = tbox[..., :2] * [w, h] - grid
        l_xy = tf.reduce_sum(obj[..., None] * tf.square(
            tf.sigmoid(p[..., :2]) - frac))
        twh = tf.math.log(tf.maximum(tbox[..., 2:4] * [w, h], 1e-3))
        l_wh = tf.reduce_sum(obj[..., None] * tf.square(p[..., 2:4] - twh))
        l_cls = tf.reduce_sum(obj * tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.maximum(tcls, 0), logits=p[..., 5:]))
        return (l_obj + l_xy + l_wh + l_cls) / batch

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "bounding_box_format": self.bounding_box_format}


@keras.saving.register_keras_serializable(package="keras_yolo_tests")
class TinyDecode(keras.layers.Layer):
    """Raw `(B, H, W, 1, 5 + C)` to `{"boxes" rel_center_xywh, "objectness",
    "class_probs"}`."""

    def call(self, raw):
        raw = tf.cast(raw, tf.float32)
        _, h, w, _, d = raw.shape
        p = tf.reshape(raw, (-1, h * w, d))
        grid = tf.cast(tf.stack([tf.range(h * w) % w, tf.range(h * w) // w],
                                -1), tf.float32)
        xy = (grid + tf.sigmoid(p[..., :2])) / [w, h]
        wh = tf.exp(tf.minimum(p[..., 2:4], 4.0)) / [w, h]
        return {"boxes": tf.concat([xy, wh], -1),
                "objectness": tf.sigmoid(p[..., 4]),
                "class_probs": tf.nn.softmax(p[..., 5:])}

    def compute_output_spec(self, raw):
        b, h, w, _, d = raw.shape
        return {"boxes": keras.KerasTensor((b, h * w, 4), "float32"),
                "objectness": keras.KerasTensor((b, h * w), "float32"),
                "class_probs": keras.KerasTensor((b, h * w, d - 5),
                                                 "float32")}
