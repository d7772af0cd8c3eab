"""A small YOLOv4-style detector: CSP stages with Mish, SPP and a PAN neck.

YOLOv4's architecture at a width and depth that trains on a CPU in minutes:
a CSPDarknet-like backbone (Mish, `keras.activations.mish` through
`ConvBNAct(activation="mish")`), an SPP block on the stride-32 features
(pools 13, 9, 5 then the input, as in darknet), a PAN neck (top-down then
bottom-up path aggregation, leaky ReLU as in yolov4.cfg) and three
detection heads at strides 8, 16, 32.
"""

import keras

from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.layers.csp import apply_csp_stage
from keras_yolo.layers.spp import SpatialPyramidPooling
from keras_yolo.models.common import DARKNET_CONV, check_num_classes, detection_head, image_input
from keras_yolo.models.yolo_model import YoloModel

MISH_CONV = dict(DARKNET_CONV, activation="mish")
# (filters, residual units) of the five stride-2 CSP stages, before `width`.
SMALL_V4_STAGES = ((32, 1), (64, 1), (96, 2), (128, 2), (192, 1))
SPP_POOLS = (13, 9, 5)  # darknet yolov4.cfg [maxpool] sizes, concatenated largest first
NUM_ANCHORS = 3


def _scaled(filters, width):
    return max(8, int(round(filters * width / 8)) * 8)


def small_v4(num_classes=3, input_shape=(256, 256, 3), width=1.0, name="small_v4"):
    """Builds the small CSP / Mish / SPP / PAN detector.

    Args:
        num_classes: C.
        input_shape: `(H, W, 3)`, H and W multiples of 32 (or None).
        width: channel multiplier of every layer.

    Returns:
        `keras_yolo.models.YoloModel` with outputs `[(B, H/8, W/8, 3, 5 + C),
        (B, H/16, W/16, 3, 5 + C), (B, H/32, W/32, 3, 5 + C)]`.

    Example:
        >>> model = small_v4(num_classes=3)
        >>> model.compile(optimizer="adam", loss=YoloV4Loss(num_classes=3, anchors=...))
    """
    check_num_classes(num_classes)
    inputs = image_input(input_shape)
    x = ConvBNAct(_scaled(16, width), 3, name="backbone_stem", **MISH_CONV)(inputs)
    features = []
    for i, (filters, blocks) in enumerate(SMALL_V4_STAGES, start=1):
        x = apply_csp_stage(x, _scaled(filters, width), blocks, first=i == 1,
                            name=f"backbone_stage{i}", **MISH_CONV)
        features.append(x)
    c3, c4, c5 = features[2:]
    f3, f4, f5 = (_scaled(f, width) for f in (48, 64, 96))
    x = ConvBNAct(f5, 1, name="neck_spp_cv1", **DARKNET_CONV)(c5)
    x = SpatialPyramidPooling(SPP_POOLS, input_last=True, name="neck_spp")(x)
    n5 = ConvBNAct(f5, 1, name="neck_spp_cv2", **DARKNET_CONV)(x)
    # PAN top-down: P5 -> P4 -> P3.
    up = keras.layers.UpSampling2D(2, name="neck_td16_up")(
        ConvBNAct(f4, 1, name="neck_td16_reduce", **DARKNET_CONV)(n5))
    x = keras.layers.Concatenate(name="neck_td16_concat")(
        [ConvBNAct(f4, 1, name="neck_td16_lateral", **DARKNET_CONV)(c4), up])
    n4 = ConvBNAct(f4, 3, name="neck_td16_conv", **DARKNET_CONV)(x)
    up = keras.layers.UpSampling2D(2, name="neck_td8_up")(
        ConvBNAct(f3, 1, name="neck_td8_reduce", **DARKNET_CONV)(n4))
    x = keras.layers.Concatenate(name="neck_td8_concat")(
        [ConvBNAct(f3, 1, name="neck_td8_lateral", **DARKNET_CONV)(c3), up])
    n3 = ConvBNAct(f3, 3, name="neck_td8_conv", **DARKNET_CONV)(x)
    # PAN bottom-up with the heads: P3 -> P4 -> P5.
    outputs = []
    x = n3
    for stride, skip, filters in ((8, None, f3), (16, n4, f4), (32, n5, f5)):
        if skip is not None:
            down = ConvBNAct(filters, 3, strides=2, name=f"neck_bu{stride}_down", **DARKNET_CONV)(x)
            x = keras.layers.Concatenate(name=f"neck_bu{stride}_concat")([down, skip])
            x = ConvBNAct(filters, 1, name=f"neck_bu{stride}_conv", **DARKNET_CONV)(x)
        y = ConvBNAct(filters * 2, 3, name=f"head_p{stride}_conv", **DARKNET_CONV)(x)
        outputs.append(detection_head(y, NUM_ANCHORS, num_classes, name=f"p{stride}"))
    return YoloModel(inputs, outputs, name=name)
