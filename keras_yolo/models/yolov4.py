"""YOLOv4 (Bochkovskiy et al. 2020): CSPDarknet53 (Mish), SPP, PAN, three YOLOv3 heads; YOLOv4-tiny.

Layer for layer AlexeyAB darknet's cfg/yolov4.cfg and cfg/yolov4-tiny.cfg.
The backbone uses Mish, the neck and heads leaky ReLU, as in the cfg.
Outputs a list of levels in ascending stride, each `(B, H/s, W/s, 3, 5 + C)`:
strides (8, 16, 32), tiny (16, 32).

The rest of the paper's bag of specials is in `keras_yolo.layers` for any model:
`SpatialAttention` (SAM), `WeightedResidual` (MiWRC), `DropBlock`, and
`ConvBNAct(synchronized=True)` as the CmBN substitute (see `conv_bn`).
`yolov4(..., sam=True)` adds YOLOv4's point-wise SAM before each head
(as in darknet's yolov4-sam cfgs), `dropblock_rate > 0` a DropBlock after
each backbone stage.
"""

import keras

from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.layers.csp import apply_csp_stage, apply_tiny_csp_block
from keras_yolo.layers.dropblock import DropBlock
from keras_yolo.layers.pan import apply_pan
from keras_yolo.layers.sam import SpatialAttention
from keras_yolo.layers.spp import SpatialPyramidPooling
from keras_yolo.models.common import DARKNET_CONV, check_num_classes, detection_head, image_input
from keras_yolo.models.yolo_model import YoloModel
from keras_yolo.models.yolov3 import DARKNET_SPP_POOLS, NUM_ANCHORS

MISH_CONV = dict(DARKNET_CONV, activation="mish")
# CSPDarknet53: (filters, residual units) of the five stride-2 stages.
CSPDARKNET53_STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))
# DropBlock's block size in the paper's ablation (and darknet's dropblock_size_abs=7).
DROPBLOCK_SIZE = 7


def cspdarknet53(inputs, dropblock_rate=0.0, name="backbone"):
    """CSPDarknet53 features at strides 8, 16, 32 (256, 512, 1024 channels)."""
    x = ConvBNAct(32, 3, name=f"{name}_stem", **MISH_CONV)(inputs)
    features = []
    for i, (filters, blocks) in enumerate(CSPDARKNET53_STAGES, start=1):
        x = apply_csp_stage(x, filters, blocks, first=i == 1, name=f"{name}_stage{i}", **MISH_CONV)
        if dropblock_rate > 0 and i >= 3:
            x = DropBlock(dropblock_rate, DROPBLOCK_SIZE, name=f"{name}_stage{i}_dropblock")(x)
        features.append(x)
    return features[2:]


def _conv_set(x, filters, name):
    """1x1 f, 3x3 2f, 1x1 f, 3x3 2f, 1x1 f (leaky)."""
    for i, (f, k) in enumerate(((filters, 1), (filters * 2, 3)) * 2 + ((filters, 1),), start=1):
        x = ConvBNAct(f, k, name=f"{name}_cv{i}", **DARKNET_CONV)(x)
    return x


def yolov4(num_classes=80, input_shape=(608, 608, 3), sam=False, dropblock_rate=0.0, name=None):
    """YOLOv4: CSPDarknet53 + SPP + PAN (top-down then bottom-up path aggregation) + 3 heads.

    Example:
        >>> [o.shape for o in yolov4(num_classes=80).outputs]
        [(None, 76, 76, 3, 85), (None, 38, 38, 3, 85), (None, 19, 19, 3, 85)]
    """
    check_num_classes(num_classes)
    inputs = image_input(input_shape)
    c3, c4, c5 = cspdarknet53(inputs, dropblock_rate=dropblock_rate)
    # SPP block on C5.
    x = ConvBNAct(512, 1, name="neck_spp_cv1", **DARKNET_CONV)(c5)
    x = ConvBNAct(1024, 3, name="neck_spp_cv2", **DARKNET_CONV)(x)
    x = ConvBNAct(512, 1, name="neck_spp_cv3", **DARKNET_CONV)(x)
    x = SpatialPyramidPooling(DARKNET_SPP_POOLS, input_last=True, name="neck_spp")(x)
    x = ConvBNAct(512, 1, name="neck_spp_cv4", **DARKNET_CONV)(x)
    x = ConvBNAct(1024, 3, name="neck_spp_cv5", **DARKNET_CONV)(x)
    n5 = ConvBNAct(512, 1, name="neck_spp_cv6", **DARKNET_CONV)(x)
    n3, n4, n5 = apply_pan([c3, c4, n5], (128, 256, 512), _conv_set, strides=(8, 16, 32), name="neck",
                           **DARKNET_CONV)
    outputs = []
    for stride, x, filters in ((8, n3, 128), (16, n4, 256), (32, n5, 512)):
        y = ConvBNAct(filters * 2, 3, name=f"head_p{stride}_conv", **DARKNET_CONV)(x)
        if sam:
            y = SpatialAttention("pointwise", name=f"head_p{stride}_sam")(y)
        outputs.append(detection_head(y, NUM_ANCHORS, num_classes, name=f"p{stride}"))
    return YoloModel(inputs, outputs, name=name or "yolov4")


def yolov4_tiny(num_classes=80, input_shape=(416, 416, 3), name=None):
    """YOLOv4-tiny: CSP-tiny backbone (leaky), heads at strides 16 and 32."""
    check_num_classes(num_classes)
    inputs = image_input(input_shape)
    x = ConvBNAct(32, 3, strides=2, name="backbone_conv1", **DARKNET_CONV)(inputs)
    x = ConvBNAct(64, 3, strides=2, name="backbone_conv2", **DARKNET_CONV)(x)
    transition = None
    for i, filters in enumerate((64, 128, 256), start=1):
        x = ConvBNAct(filters, 3, name=f"backbone_stage{i}_conv", **DARKNET_CONV)(x)
        x, transition = apply_tiny_csp_block(x, name=f"backbone_stage{i}", **DARKNET_CONV)
        x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"backbone_stage{i}_pool")(x)
    x = ConvBNAct(512, 3, name="backbone_conv3", **DARKNET_CONV)(x)
    x = ConvBNAct(256, 1, name="neck_p32_cv1", **DARKNET_CONV)(x)
    p5 = ConvBNAct(512, 3, name="head_p32_conv", **DARKNET_CONV)(x)
    p5 = detection_head(p5, NUM_ANCHORS, num_classes, name="p32")
    x = ConvBNAct(128, 1, name="neck_p16_lateral", **DARKNET_CONV)(x)
    x = keras.layers.UpSampling2D(2, name="neck_p16_upsample")(x)
    x = keras.layers.Concatenate(name="neck_p16_concat")([x, transition])
    p4 = ConvBNAct(256, 3, name="head_p16_conv", **DARKNET_CONV)(x)
    p4 = detection_head(p4, NUM_ANCHORS, num_classes, name="p16")
    return YoloModel(inputs, [p4, p5], name=name or "yolov4_tiny")
