"""YOLOv3 (Redmon & Farhadi 2018): Darknet-53 and a three-scale FPN; YOLOv3-SPP; YOLOv3-tiny.

Layer for layer darknet's cfg/yolov3.cfg, cfg/yolov3-spp.cfg and
cfg/yolov3-tiny.cfg. Outputs a list of levels in ascending stride, each
`(B, H/s, W/s, 3, 5 + C)`: strides (8, 16, 32), tiny (16, 32).
"""

import keras

from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.layers.csp import apply_darknet_stage
from keras_yolo.layers.spp import SpatialPyramidPooling
from keras_yolo.models.common import DARKNET_CONV, check_num_classes, detection_head, image_input
from keras_yolo.models.yolo_model import YoloModel

NUM_ANCHORS = 3
# Darknet-53: (filters, residual units) of the five stride-2 stages.
DARKNET53_STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))
# darknet's SPP: pools 5, 9, 13 concatenated as [13, 9, 5, input] (`[route] layers=-1,-3,-5,-6`).
DARKNET_SPP_POOLS = (13, 9, 5)


def darknet53(inputs, name="backbone"):
    """Darknet-53 features at strides 8, 16, 32 (256, 512, 1024 channels)."""
    x = ConvBNAct(32, 3, name=f"{name}_stem", **DARKNET_CONV)(inputs)
    features = []
    for i, (filters, blocks) in enumerate(DARKNET53_STAGES, start=1):
        x = apply_darknet_stage(x, filters, blocks, name=f"{name}_stage{i}", **DARKNET_CONV)
        features.append(x)
    return features[2:]


def conv_set(x, filters, name, spp=False):
    """Five alternating convs 1x1 f, 3x3 2f, 1x1 f, 3x3 2f, 1x1 f (SPP after the third when asked)."""
    x = ConvBNAct(filters, 1, name=f"{name}_cv1", **DARKNET_CONV)(x)
    x = ConvBNAct(filters * 2, 3, name=f"{name}_cv2", **DARKNET_CONV)(x)
    x = ConvBNAct(filters, 1, name=f"{name}_cv3", **DARKNET_CONV)(x)
    if spp:
        x = SpatialPyramidPooling(DARKNET_SPP_POOLS, input_last=True, name=f"{name}_spp")(x)
        x = ConvBNAct(filters, 1, name=f"{name}_spp_cv", **DARKNET_CONV)(x)
    x = ConvBNAct(filters * 2, 3, name=f"{name}_cv4", **DARKNET_CONV)(x)
    return ConvBNAct(filters, 1, name=f"{name}_cv5", **DARKNET_CONV)(x)


def yolov3(num_classes=80, input_shape=(416, 416, 3), spp=False, name=None):
    """YOLOv3 (or YOLOv3-SPP): Darknet-53, top-down FPN with upsample + concat, three heads.

    Example:
        >>> [o.shape for o in yolov3(num_classes=80).outputs]
        [(None, 52, 52, 3, 85), (None, 26, 26, 3, 85), (None, 13, 13, 3, 85)]
    """
    check_num_classes(num_classes)
    inputs = image_input(input_shape)
    c3, c4, c5 = darknet53(inputs)
    outputs = []
    x = c5
    for level, (skip, filters) in enumerate(((None, 512), (c4, 256), (c3, 128))):
        stride = (32, 16, 8)[level]
        if skip is not None:
            x = ConvBNAct(filters, 1, name=f"neck_p{stride}_lateral", **DARKNET_CONV)(x)
            x = keras.layers.UpSampling2D(2, name=f"neck_p{stride}_upsample")(x)
            x = keras.layers.Concatenate(name=f"neck_p{stride}_concat")([x, skip])
        x = conv_set(x, filters, name=f"neck_p{stride}", spp=spp and skip is None)
        y = ConvBNAct(filters * 2, 3, name=f"head_p{stride}_conv", **DARKNET_CONV)(x)
        outputs.insert(0, detection_head(y, NUM_ANCHORS, num_classes, name=f"p{stride}"))
    return YoloModel(inputs, outputs, name=name or ("yolov3_spp" if spp else "yolov3"))


def yolov3_tiny(num_classes=80, input_shape=(416, 416, 3), name=None):
    """YOLOv3-tiny: seven 3x3 convs with max pools, heads at strides 16 and 32."""
    check_num_classes(num_classes)
    inputs = image_input(input_shape)
    x, c4 = inputs, None
    for i, filters in enumerate((16, 32, 64, 128, 256, 512, 1024), start=1):
        x = ConvBNAct(filters, 3, name=f"backbone_conv{i}", **DARKNET_CONV)(x)
        if filters == 256:
            c4 = x
        if filters < 1024:
            # the sixth pool keeps the size (darknet `[maxpool] size=2 stride=1`)
            x = keras.layers.MaxPooling2D(2, 1 if filters == 512 else 2, padding="same",
                                          name=f"backbone_pool{i}")(x)
    x = ConvBNAct(256, 1, name="neck_p32_cv1", **DARKNET_CONV)(x)
    p5 = ConvBNAct(512, 3, name="head_p32_conv", **DARKNET_CONV)(x)
    p5 = detection_head(p5, NUM_ANCHORS, num_classes, name="p32")
    x = ConvBNAct(128, 1, name="neck_p16_lateral", **DARKNET_CONV)(x)
    x = keras.layers.UpSampling2D(2, name="neck_p16_upsample")(x)
    x = keras.layers.Concatenate(name="neck_p16_concat")([x, c4])
    p4 = ConvBNAct(256, 3, name="head_p16_conv", **DARKNET_CONV)(x)
    p4 = detection_head(p4, NUM_ANCHORS, num_classes, name="p16")
    return YoloModel(inputs, [p4, p5], name=name or "yolov3_tiny")
