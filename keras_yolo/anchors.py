"""Default anchors of each YOLO version, in pixels of the input image.

Nested as `(levels, anchors_per_level, 2)` with `(w, h)` rows, levels in
ascending stride. YOLOv2's cfgs give anchors in grid cells of the 13x13
output at 416 (stride 32); they are converted to pixels here.
"""

import numpy as np

YOLOV2_STRIDE = 32

# darknet cfg/yolov2-voc.cfg and cfg/yolov2.cfg, grid cells at stride 32.
_YOLOV2_VOC_CELLS = [(1.3221, 1.73145), (3.19275, 4.00944), (5.05587, 8.09892),
                     (9.47112, 4.84053), (11.2364, 10.0071)]
_YOLOV2_COCO_CELLS = [(0.57273, 0.677385), (1.87446, 2.06253), (3.33843, 5.47434),
                      (7.88282, 3.52778), (9.77052, 9.16828)]
YOLOV2_VOC_ANCHORS = (np.array([_YOLOV2_VOC_CELLS]) * YOLOV2_STRIDE).tolist()
YOLOV2_COCO_ANCHORS = (np.array([_YOLOV2_COCO_CELLS]) * YOLOV2_STRIDE).tolist()

# darknet cfg/yolov3.cfg: the nine COCO anchors at 416, masks 0-2 / 3-5 / 6-8.
YOLOV3_ANCHORS = [[(10, 13), (16, 30), (33, 23)],
                  [(30, 61), (62, 45), (59, 119)],
                  [(116, 90), (156, 198), (373, 326)]]

# AlexeyAB darknet cfg/yolov4.cfg at 608.
YOLOV4_ANCHORS = [[(12, 16), (19, 36), (40, 28)],
                  [(36, 75), (76, 55), (72, 146)],
                  [(142, 110), (192, 243), (459, 401)]]

# ultralytics yolov5 models/yolov5s.yaml (P3/8, P4/16, P5/32).
YOLOV5_ANCHORS = YOLOV3_ANCHORS

STRIDES = (8, 16, 32)
