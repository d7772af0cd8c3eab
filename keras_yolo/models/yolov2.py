"""YOLOv2 (Redmon & Farhadi 2017): Darknet-19 with the passthrough (reorg) layer; and YOLOv2-tiny.

Layer for layer darknet's cfg/yolov2.cfg and cfg/yolov2-tiny.cfg. One output
level at stride 32: `(B, H/32, W/32, A, 5 + C)` with A = 5 anchors.
"""

import keras

from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.layers.reorg import Reorg
from keras_yolo.models.common import DARKNET_CONV, check_num_classes, detection_head, image_input
from keras_yolo.models.yolo_model import YoloModel

YOLOV2_NUM_ANCHORS = 5
# Darknet-19 (filters, kernel) with "M" a 2x2 stride-2 max pool; the passthrough taps the 13th conv.
_DARKNET19 = [(32, 3), "M", (64, 3), "M", (128, 3), (64, 1), (128, 3), "M", (256, 3), (128, 1), (256, 3), "M",
              (512, 3), (256, 1), (512, 3), (256, 1), (512, 3), "M",
              (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)]
_PASSTHROUGH_CONV = 13
_PASSTHROUGH_FILTERS = 64
# yolov2-tiny: (filters, kernel, pool stride after it or 0).
_YOLOV2_TINY = [(16, 2), (32, 2), (64, 2), (128, 2), (256, 2), (512, 1), (1024, 0)]


def yolov2(num_classes=80, input_shape=(416, 416, 3), num_anchors=YOLOV2_NUM_ANCHORS, darknet_reorg=False,
           name=None):
    """YOLOv2: Darknet-19, two 3x3x1024 convs, passthrough from the 26x26 map (at 416), one head.

    `darknet_reorg=True` uses darknet's reorg element order (see `Reorg`), needed for darknet weights.

    Example:
        >>> yolov2(num_classes=80).output_shape
        (None, 13, 13, 5, 85)
    """
    check_num_classes(num_classes)
    inputs = image_input(input_shape)
    x, convs, pools, passthrough = inputs, 0, 0, None
    for spec in _DARKNET19:
        if spec == "M":
            pools += 1
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"backbone_pool{pools}")(x)
            continue
        convs += 1
        x = ConvBNAct(spec[0], spec[1], name=f"backbone_conv{convs}", **DARKNET_CONV)(x)
        if convs == _PASSTHROUGH_CONV:
            passthrough = x
    x = ConvBNAct(1024, 3, name="head_conv1", **DARKNET_CONV)(x)
    x = ConvBNAct(1024, 3, name="head_conv2", **DARKNET_CONV)(x)
    p = ConvBNAct(_PASSTHROUGH_FILTERS, 1, name="passthrough_conv", **DARKNET_CONV)(passthrough)
    p = Reorg(2, darknet_order=darknet_reorg, name="passthrough_reorg")(p)
    x = keras.layers.Concatenate(name="passthrough_concat")([p, x])
    x = ConvBNAct(1024, 3, name="head_conv3", **DARKNET_CONV)(x)
    outputs = detection_head(x, num_anchors, num_classes, name="p5")
    return YoloModel(inputs, outputs, name=name or "yolov2")


def yolov2_tiny(num_classes=80, input_shape=(416, 416, 3), num_anchors=YOLOV2_NUM_ANCHORS, name=None):
    """YOLOv2-tiny: seven 3x3 convs with max pools (the sixth pool at stride 1), a 3x3x512, one head."""
    check_num_classes(num_classes)
    inputs = image_input(input_shape)
    x = inputs
    for i, (filters, pool_stride) in enumerate(_YOLOV2_TINY, start=1):
        x = ConvBNAct(filters, 3, name=f"backbone_conv{i}", **DARKNET_CONV)(x)
        if pool_stride:
            x = keras.layers.MaxPooling2D(2, pool_stride, padding="same", name=f"backbone_pool{i}")(x)
    x = ConvBNAct(512, 3, name="head_conv1", **DARKNET_CONV)(x)
    outputs = detection_head(x, num_anchors, num_classes, name="p5")
    return YoloModel(inputs, outputs, name=name or "yolov2_tiny")
