"""`YoloV2Decode`: a YOLOv2 head output to boxes, objectness and class probabilities."""

import keras

from keras_yolo import anchors as default_anchors
from keras_yolo import grid
from keras_yolo.layers.anchor_grid_decode import AnchorGridDecode



@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV2Decode(AnchorGridDecode):
    """Decodes a YOLOv2 head output (Redmon & Farhadi 2017).

        x = logistic(t_x) + c_x,   y = logistic(t_y) + c_y      (grid cells)
        w = p_w e^{t_w},           h = p_h e^{t_h}               (p = anchor)
        C = logistic(t_o),         p(c_k) = softmax(c)_k

    (`keras_yolo.grid.decode_level` with `class_activation="softmax"`.)

    Args:
        anchors: `(1, A, 2)` anchor `(w, h)` in input pixels. Default
            `keras_yolo.anchors.YOLOV2_COCO_ANCHORS` (darknet `yolov2.cfg`).
        strides: `(stride,)`, default `(32,)`; the input image is
            `(H * stride, W * stride)` pixels.
        bounding_box_format: format of the output boxes (pixel formats are in
            pixels of that input image).

    `t_w, t_h` are clipped to `±MAX_LOG_SCALE` (20) before `exp`, so every
    box is finite whatever the raw output (darknet overflows at 88).

    Input: raw `(B, H, W, A, 5 + C)` (or a list of that one level; any float
    dtype, computed in float32); the batch size and the grid size may be
    unknown until run time.
    Output: `{"boxes": (B, N, 4), "objectness": (B, N), "class_probs": (B, N, C)}`,
    `N = H W A`, ordered by row, column, anchor.

    Example:
        >>> decode = YoloV2Decode(bounding_box_format="xyxy")
        >>> out = decode(model(images))   # out["boxes"]: (B, 13*13*5, 4) pixels
    """

    def __init__(self, anchors=None, strides=(32,),
                 bounding_box_format="rel_center_xywh", **kwargs):
        super().__init__(**kwargs)
        if anchors is None:
            anchors = default_anchors.YOLOV2_COCO_ANCHORS
        anchors, stride = grid.single_level_anchors(anchors, strides)
        self.anchors = [anchors]
        self.strides = (stride,)
        self.bounding_box_format = bounding_box_format
        self.configure(self.anchors, self.strides, bounding_box_format,
                       class_activation="softmax")

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, strides=list(self.strides),
                      bounding_box_format=self.bounding_box_format)
        return config
