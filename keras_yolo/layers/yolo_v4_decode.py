"""`YoloV4Decode`: YOLOv4 head outputs to boxes, objectness and class probabilities."""

import keras

from keras_yolo import anchors as default_anchors
from keras_yolo import grid
from keras_yolo.layers.anchor_grid_decode import AnchorGridDecode



@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV4Decode(AnchorGridDecode):
    """Decodes YOLOv4 head outputs (Bochkovskiy et al. 2020).

        x = (scale(logistic(t_x)) + c_x) / W,  scale(s) = scale_x_y * s - (scale_x_y - 1) / 2
        y = (scale(logistic(t_y)) + c_y) / H
        w = p_w e^{t_w},  h = p_h e^{t_h},  C = logistic(t_o),  p(c_k) = logistic(c_k)

    `scale_x_y > 1` ("eliminate grid sensitivity") lets a centre reach the
    cell borders and `(scale_x_y - 1) / 2` beyond them. `t_w, t_h` are
    clipped to `±MAX_LOG_SCALE` (20) before `exp`, so any finite raw output
    decodes to a finite box (darknet's `exp` overflows to inf / NaN boxes).
    (`keras_yolo.grid.decode_level` with `scale_x_y`.)

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
                 scale_x_y=grid.YOLOV4_SCALE_X_Y,
                 bounding_box_format="rel_center_xywh", num_classes=None,
                 **kwargs):
        super().__init__(**kwargs)
        if anchors is None:
            anchors = default_anchors.YOLOV4_ANCHORS
        self.anchors = [[[float(v) for v in a] for a in level]
                        for level in anchors]
        self.strides = tuple(int(s) for s in strides)
        self.bounding_box_format = bounding_box_format
        self.configure(self.anchors, self.strides, bounding_box_format,
                       num_classes, scale_x_y=scale_x_y)
        self.scale_x_y = self._scales
        self.num_classes = self._classes

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, strides=list(self.strides),
                      scale_x_y=list(self.scale_x_y),
                      bounding_box_format=self.bounding_box_format,
                      num_classes=self.num_classes)
        return config
