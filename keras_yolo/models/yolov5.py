"""YOLOv5 v6.0+ (ultralytics): Conv-BN-SiLU, C3, SPPF, PAN, three heads, sizes n/s/m/l/x.

Built from ultralytics' models/yolov5{n,s,m,l,x}.yaml: one architecture whose
block repeats scale by `depth_multiple` and channels by `width_multiple`:
n = max(round(n * depth), 1) and c = ceil(c * width / 8) * 8 (ultralytics
`parse_model`, `make_divisible`). Layer names carry the yaml's module index
(`m2_cv1` is ultralytics' `model.2.cv1`). Outputs strides (8, 16, 32), each
`(B, H/s, W/s, 3, 5 + C)`; the head biases start at ultralytics'
`_initialize_biases` priors.
"""

import math

import keras
import numpy as np

from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.layers.csp import apply_c3
from keras_yolo.layers.spp import apply_sppf
from keras_yolo.models.common import YOLOV5_CONV, check_num_classes, detection_head, image_input
from keras_yolo.models.yolo_model import YoloModel

NUM_ANCHORS = 3
STRIDES = (8, 16, 32)
# (depth_multiple, width_multiple) of models/yolov5{n,s,m,l,x}.yaml.
YOLOV5_MULTIPLES = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}
CHANNEL_DIVISOR = 8
# _initialize_biases: 8 objects per 640 x 640 image, class probability 0.6 / (nc - 0.99999).
_PRIOR_OBJECTS_PER_IMAGE, _PRIOR_IMAGE_SIZE, _PRIOR_CLASS_PROB = 8.0, 640.0, 0.6


def repeats(n, depth_multiple):
    """Blocks of a yaml module with `n` repeats: max(round(n * depth), 1) (ultralytics `parse_model`).

    Example:
        >>> repeats(9, 0.33)
        3
    """
    return max(round(n * depth_multiple), 1) if n > 1 else n


def channels(c, width_multiple):
    """Channels of a yaml module with `c`: ceil(c * width / 8) * 8 (ultralytics `make_divisible`).

    Example:
        >>> channels(64, 0.25)
        16
    """
    return int(math.ceil(c * width_multiple / CHANNEL_DIVISOR) * CHANNEL_DIVISOR)


def yolov5(num_classes=80, input_shape=(640, 640, 3), depth_multiple=0.33, width_multiple=0.50, name=None):
    """YOLOv5 at any depth / width multiple (v6.0 yaml: 6x6 stem, C3, SPPF, PAN with C3).

    Example:
        >>> [o.shape for o in yolov5(num_classes=80).outputs]   # yolov5s
        [(None, 80, 80, 3, 85), (None, 40, 40, 3, 85), (None, 20, 20, 3, 85)]
    """
    check_num_classes(num_classes)
    c = lambda count: channels(count, width_multiple)  # noqa: E731 - yaml shorthand
    d = lambda count: repeats(count, depth_multiple)  # noqa: E731
    kw = YOLOV5_CONV
    inputs = image_input(input_shape)
    # backbone
    x = ConvBNAct(c(64), 6, strides=2, padding=2, name="m0", **kw)(inputs)           # 0-P1/2
    x = ConvBNAct(c(128), 3, strides=2, name="m1", **kw)(x)                          # 1-P2/4
    x = apply_c3(x, c(128), d(3), name="m2", **kw)
    x = ConvBNAct(c(256), 3, strides=2, name="m3", **kw)(x)                          # 3-P3/8
    b4 = apply_c3(x, c(256), d(6), name="m4", **kw)
    x = ConvBNAct(c(512), 3, strides=2, name="m5", **kw)(b4)                         # 5-P4/16
    b6 = apply_c3(x, c(512), d(9), name="m6", **kw)
    x = ConvBNAct(c(1024), 3, strides=2, name="m7", **kw)(b6)                        # 7-P5/32
    x = apply_c3(x, c(1024), d(3), name="m8", **kw)
    x = apply_sppf(x, c(1024), 5, name="m9", **kw)
    # head: top-down
    h10 = ConvBNAct(c(512), 1, name="m10", **kw)(x)
    x = keras.layers.UpSampling2D(2, name="m11")(h10)
    x = keras.layers.Concatenate(name="m12")([x, b6])
    x = apply_c3(x, c(512), d(3), shortcut=False, name="m13", **kw)
    h14 = ConvBNAct(c(256), 1, name="m14", **kw)(x)
    x = keras.layers.UpSampling2D(2, name="m15")(h14)
    x = keras.layers.Concatenate(name="m16")([x, b4])
    p3 = apply_c3(x, c(256), d(3), shortcut=False, name="m17", **kw)                 # 17 (P3/8)
    # bottom-up
    x = ConvBNAct(c(256), 3, strides=2, name="m18", **kw)(p3)
    x = keras.layers.Concatenate(name="m19")([x, h14])
    p4 = apply_c3(x, c(512), d(3), shortcut=False, name="m20", **kw)                 # 20 (P4/16)
    x = ConvBNAct(c(512), 3, strides=2, name="m21", **kw)(p4)
    x = keras.layers.Concatenate(name="m22")([x, h10])
    p5 = apply_c3(x, c(1024), d(3), shortcut=False, name="m23", **kw)                # 23 (P5/32)
    outputs = [detection_head(p, NUM_ANCHORS, num_classes, name=f"m24_m{i}") for i, p in enumerate((p3, p4, p5))]
    model = YoloModel(inputs, outputs, name=name or "yolov5")
    _initialize_biases(model, num_classes)
    return model


def _initialize_biases(model, num_classes):
    """Objectness bias log(8 / (640 / s)²), class bias log(0.6 / (C - 0.99999)) (ultralytics Detect)."""
    for i, stride in enumerate(STRIDES):
        conv = model.get_layer(f"m24_m{i}_conv")
        bias = np.zeros((NUM_ANCHORS, 5 + num_classes), "float32")
        bias[:, 4] = math.log(_PRIOR_OBJECTS_PER_IMAGE / (_PRIOR_IMAGE_SIZE / stride) ** 2)
        bias[:, 5:] = math.log(_PRIOR_CLASS_PROB / (num_classes - 0.99999))
        conv.bias.assign(bias.reshape(-1))
