"""`YoloV2Decode`: a YOLOv2 head output to boxes, objectness and class probabilities."""

import keras
import numpy as np
import tensorflow as tf

from keras_yolo import anchors as default_anchors
from keras_yolo import boxes as box_ops
from keras_yolo.layers.flatten import flatten_cells

# Bound on t_w, t_h before exp: e^20 ≈ 4.9e8 anchors is far beyond any image,
# yet a box's squared pixel area stays well inside float32, so IoUs, NMS and
# the losses' IoU targets never see inf (darknet's exp overflows at t ≈ 88,
# and inf * 0 areas give NaN well before). Trained heads stay within |t| < 10.
MAX_LOG_SCALE = 20.0


def check_v2_anchors(anchors, strides):
    """`(1, A, 2)` pixel anchors and `strides=(s,)` -> `(A, 2)` list, stride."""
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


def anchor_sizes(t_wh, anchors_cells):
    """`p e^t` for raw `(..., A, 2)` `t_w, t_h` and `(A, 2)` anchors, with
    `t` clipped to `±MAX_LOG_SCALE` so that every size is finite and > 0."""
    t_wh = tf.clip_by_value(t_wh, -MAX_LOG_SCALE, MAX_LOG_SCALE)
    return tf.exp(t_wh) * tf.cast(anchors_cells, t_wh.dtype)


def decode_v2(raw, anchors_cells):
    """Decodes one `(B, H, W, A, 5 + C)` float32 raw output (seed notation).

        x = (logistic(t_x) + c_x) / W,   y = (logistic(t_y) + c_y) / H
        w = p_w e^{t_w} / W,             h = p_h e^{t_h} / H
        C = logistic(t_o),               p(c_k) = softmax(c)_k

    with `p_w, p_h` the anchor in grid cells (darknet's `get_region_box`),
    and `t_w, t_h` clipped to `±MAX_LOG_SCALE` first, so that huge raw
    outputs give huge but finite boxes (darknet's would be inf or NaN).
    The grid size is read at run time (`tf.shape`).

    Returns:
        `(B, H, W, A, 4)` rel_center_xywh boxes, `(B, H, W, A)` objectness,
        `(B, H, W, A, C)` class probabilities.
    """
    height = tf.cast(tf.shape(raw)[1], tf.float32)
    width = tf.cast(tf.shape(raw)[2], tf.float32)
    anchors_cells = tf.cast(anchors_cells, tf.float32)
    cols = tf.range(width, dtype=tf.float32)[None, None, :, None]
    rows = tf.range(height, dtype=tf.float32)[None, :, None, None]
    offset = tf.sigmoid(raw[..., 0:2])
    x = (cols + offset[..., 0]) / width
    y = (rows + offset[..., 1]) / height
    size = anchor_sizes(raw[..., 2:4], anchors_cells)
    boxes = tf.stack([x, y, size[..., 0] / width, size[..., 1] / height],
                     axis=-1)
    return boxes, tf.sigmoid(raw[..., 4]), tf.nn.softmax(raw[..., 5:], axis=-1)


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV2Decode(keras.layers.Layer):
    """Decodes a YOLOv2 head output (Redmon & Farhadi 2017).

        x = logistic(t_x) + c_x,   y = logistic(t_y) + c_y      (grid cells)
        w = p_w e^{t_w},           h = p_h e^{t_h}               (p = anchor)
        C = logistic(t_o),         p(c_k) = softmax(c)_k

    Args:
        anchors: `(1, A, 2)` anchor `(w, h)` in input pixels. Default
            `keras_yolo.anchors.YOLOV2_COCO_ANCHORS` (darknet `yolov2.cfg`).
        strides: `(stride,)`, default `(32,)`; the input image is
            `(H * stride, W * stride)` pixels.
        bounding_box_format: format of the output boxes (pixel formats are in
            pixels of that input image).

    `t_w, t_h` are clipped to `±MAX_LOG_SCALE` (20) before `exp`, so every
    box is finite whatever the raw output (darknet overflows at 88).

    Input: raw `(B, H, W, A, 5 + C)` (any float dtype, computed in float32);
    the batch size and the grid size may be unknown until run time.
    Output: `{"boxes": (B, N, 4), "objectness": (B, N), "class_probs": (B, N, C)}`,
    `N = H W A`, ordered by row, column, anchor.

    Example:
        >>> decode = YoloV2Decode(bounding_box_format="xyxy")
        >>> out = decode(model(images))   # out["boxes"]: (B, 13*13*5, 4) pixels
    """

    def __init__(self, anchors=None, strides=(32,),
                 bounding_box_format="rel_center_xywh", **kwargs):
        super().__init__(**kwargs)
        box_ops._check_format("bounding_box_format", bounding_box_format)
        if anchors is None:
            anchors = default_anchors.YOLOV2_COCO_ANCHORS
        anchors, stride = check_v2_anchors(anchors, strides)
        self.anchors = [anchors]
        self.strides = (stride,)
        self.bounding_box_format = bounding_box_format

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 1:
                raise ValueError(
                    f"YoloV2Decode expects one level; got {len(inputs)}.")
            inputs = inputs[0]
        raw = tf.cast(inputs, tf.float32)
        if raw.shape.rank == 5 and raw.shape[3] is None:
            raw = tf.ensure_shape(raw, [None, None, None,
                                        len(self.anchors[0]), None])
        if raw.shape.rank != 5 or raw.shape[3] != len(self.anchors[0]):
            raise ValueError(
                f"YoloV2Decode expects (B, H, W, {len(self.anchors[0])}, 5 + C)"
                f"; got shape {raw.shape}."
            )
        stride = self.strides[0]
        height, width = tf.shape(raw)[1], tf.shape(raw)[2]
        cells = np.asarray(self.anchors[0]) / stride
        boxes, objectness, class_probs = decode_v2(raw, cells)
        boxes = box_ops.convert(flatten_cells(boxes),
                                "rel_center_xywh", self.bounding_box_format,
                                (height * stride, width * stride))
        return {"boxes": boxes,
                "objectness": flatten_cells(objectness),
                "class_probs": flatten_cells(class_probs)}

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, strides=list(self.strides),
                      bounding_box_format=self.bounding_box_format)
        return config
