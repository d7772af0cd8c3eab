"""`YoloV5Decode`: raw YOLOv5 head outputs to boxes, objectness, class probabilities."""

import keras
import numpy as np

from keras_yolo import grid
from keras_yolo.anchors import STRIDES, YOLOV5_ANCHORS
from keras_yolo.layers.anchor_grid_decode import AnchorGridDecode


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV5Decode(AnchorGridDecode):
    """Decodes YOLOv5 head outputs as ultralytics' `Detect` does at inference.

    For the cell `(g_x, g_y)`, anchor `(a_w, a_h)` (pixels) and stride `s`
    of a level:

        b_xy = (2 sigmoid(t_xy) - 0.5 + g_xy) * s
        b_wh = (2 sigmoid(t_wh))^2 * a_wh
        p_o  = sigmoid(t_o),   p_c = sigmoid(c_c)

    (`keras_yolo.grid.decode_level` with `scale_x_y=2`,
    `size="square_sigmoid"`, in pixels.)

    Args:
        anchors: `(levels, A, 2)` anchor `(w, h)` in input pixels, levels in
            ascending stride (default yolov5's P3/P4/P5 anchors).
        strides: stride of each level, ascending (default `(8, 16, 32)`).
        bounding_box_format: format of the returned boxes, default
            `"center_xywh"` (ultralytics' pixels; the v2-v4 layers default to
            `"rel_center_xywh"`); relative formats are fractions of the input
            image, `(H_l * s_l, W_l * s_l)`.
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
        anchors = np.asarray(anchors, np.float32)
        if anchors.ndim != 3 or anchors.shape[-1] != 2:
            raise ValueError(
                "`anchors` must have shape (levels, anchors_per_level, 2); "
                f"got shape {anchors.shape}."
            )
        self.anchors = anchors.tolist()
        self.strides = tuple(int(s) for s in strides)
        self.bounding_box_format = bounding_box_format
        self.configure(anchors, self.strides, bounding_box_format,
                       num_classes, scale_x_y=grid.YOLOV5_SCALE_X_Y,
                       size="square_sigmoid", nan_to_zero=True,
                       units="pixels")
        self.num_classes = self._classes

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, strides=self.strides,
                      bounding_box_format=self.bounding_box_format,
                      num_classes=self.num_classes)
        return config
