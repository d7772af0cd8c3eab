"""`YoloV3Decode`: YOLOv3's raw head outputs (three levels) to boxes and scores."""

import keras
import numpy as np

from keras_yolo import anchors as default_anchors
from keras_yolo import grid
from keras_yolo.layers.anchor_grid_decode import AnchorGridDecode



@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV3Decode(AnchorGridDecode):
    """Decodes YOLOv3's raw outputs (levels in ascending stride).

        x = logistic(t_x) + c_x,  y = logistic(t_y) + c_y  (cells, times stride)
        w = p_w e^{t_w},          h = p_h e^{t_h}          (pixels)
        C = logistic(t_o),        p(c_k) = logistic(c_k)   (multilabel)

    (`keras_yolo.grid.decode_level` with its defaults.) `t_w, t_h` are
    clipped to `±MAX_LOG_SCALE` (20) before `exp`, so any finite raw output
    gives a finite box of positive size.

    Args:
        anchors: `(levels, A, 2)` anchors `(w, h)` in input pixels (default:
            the nine COCO anchors of darknet's yolov3.cfg), or the full list
            when `masks` is given.
        strides: pixels per grid cell of each level.
        masks: optional darknet [yolo] masks: level l uses `anchors[masks[l]]`.
        bounding_box_format: format of the output boxes; pixel formats are in
            pixels of the input image (grid size times stride).
        num_classes: optional C; when given, each level's last axis must be
            `5 + C` (a mismatch is named instead of decoding garbage).

    Input: list of `(B, H_l, W_l, A, 5 + C)` raw outputs, one per level.
    Output: `{"boxes": (B, N, 4), "objectness": (B, N), "class_probs": (B, N, C)}`
    with `N = sum_l H_l W_l A`, ordered level, row, column, anchor.

    Example:
        >>> decode = YoloV3Decode(bounding_box_format="xyxy")
        >>> out = decode([p3, p4, p5])   # (B,52,52,3,85), (B,26,26,3,85), ...
        >>> out["boxes"].shape           # (B, 10647, 4)
    """

    def __init__(self, anchors=default_anchors.YOLOV3_ANCHORS,
                 strides=default_anchors.STRIDES, masks=None,
                 bounding_box_format="rel_center_xywh", num_classes=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.strides = tuple(int(s) for s in strides)
        self.all_anchors, self.masks = grid.level_anchors(anchors, masks,
                                                          len(self.strides))
        self.anchors = np.asarray(anchors, np.float32).tolist()
        self._masks_arg = None if masks is None else self.masks
        self.bounding_box_format = bounding_box_format
        self.configure([self.all_anchors[m] for m in self.masks],
                       self.strides, bounding_box_format, num_classes)
        self.num_classes = self._classes

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, strides=list(self.strides),
                      masks=self._masks_arg,
                      bounding_box_format=self.bounding_box_format,
                      num_classes=self.num_classes)
        return config
