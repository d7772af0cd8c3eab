"""YOLOv8 (ultralytics 8): Conv-BN-SiLU, C2f, SPPF, PAN with C2f, an anchor-free decoupled head.

Built from ultralytics' `cfg/models/v8/yolov8.yaml`: one architecture whose
block repeats scale by the depth multiple d and channels by the width
multiple w, capped at `max_channels`: n = max(round(n d), 1) and
c = ceil(min(c, max_channels) w / 8) * 8 (ultralytics `parse_model`,
`make_divisible`). Layer names carry the yaml's module index (`m2_m0_cv1` is
ultralytics' `model.2.m.0.cv1`, `m22_cv3_1_2` is `model.22.cv3.1.2`).

The head (ultralytics `Detect`, the v3/v5/v8 "legacy" form) has two
branches per level, each two 3x3 Conv-BN-SiLU and a 1x1 convolution with
bias: a box branch to 4 * reg_max distribution logits (the distances from
the cell centre to the left, top, right and bottom edges, in cells, as a
softmax over reg_max bins; DFL) and a class branch to C logits. Outputs,
levels in ascending stride (8, 16, 32): `(B, H/s, W/s, 4 * reg_max + C)`,
channels `[side * reg_max + bin ..., classes ...]`, before any activation,
float32, exactly ultralytics' `cat(cv2[i](x), cv3[i](x))` in NHWC.
"""

import math

import keras
import numpy as np

from keras_yolo.layers.c2f import apply_c2f
from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.layers.spp import apply_sppf
from keras_yolo.models.common import YOLOV5_CONV, check_num_classes, image_input
from keras_yolo.models.yolo_model import YoloModel

STRIDES = (8, 16, 32)
REG_MAX = 16
HEAD_INDEX = 22
# scales of yolov8.yaml: (depth_multiple, width_multiple, max_channels).
YOLOV8_SCALES = {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024), "m": (0.67, 0.75, 768),
                 "l": (1.00, 1.00, 512), "x": (1.00, 1.25, 512)}
CHANNEL_DIVISOR = 8
# ultralytics 8 Conv is yolov5's: SiLU, BatchNorm2d(eps=1e-3, momentum=0.03).
YOLOV8_CONV = YOLOV5_CONV
# Detect.bias_init (ultralytics 8.4.190): every box logit 2.0; class logit
# log(5 / C / (640 / s)^2), i.e. about 5 objects per 640 x 640 image spread over C classes.
BOX_BIAS_PRIOR = 2.0
PRIOR_OBJECTS_PER_IMAGE, PRIOR_IMAGE_SIZE = 5.0, 640.0
# Detect: the class branch is at least this wide when C is large.
MAX_CLASS_CHANNELS = 100


def repeats(n, depth_multiple):
    """Bottlenecks of a yaml row with `n` repeats at depth multiple d: max(round(n d), 1) (n > 1)."""
    return max(round(n * depth_multiple), 1) if n > 1 else n


def channels(c, width_multiple, max_channels=1024):
    """Channels of a yaml row with `c` channels: ceil(min(c, max_channels) w / 8) * 8."""
    return int(math.ceil(min(c, max_channels) * width_multiple / CHANNEL_DIVISOR) * CHANNEL_DIVISOR)


def head_widths(p3_channels, num_classes, reg_max=REG_MAX):
    """Hidden widths of Detect's box and class branches: (max(16, C3 / 4, 4 reg_max), max(C3, min(C, 100)))."""
    return max(16, p3_channels // 4, 4 * reg_max), max(p3_channels, min(num_classes, MAX_CLASS_CHANNELS))


def yolov8(num_classes=80, input_shape=(640, 640, 3), depth_multiple=0.33, width_multiple=0.50,
           max_channels=1024, reg_max=REG_MAX, name=None):
    """YOLOv8 at any depth / width multiple (defaults: yolov8s).

    Args:
        num_classes: C.
        input_shape: `(H, W, 3)`, multiples of 32, or `(None, None, 3)`.
        depth_multiple, width_multiple, max_channels: the yaml's scale
            (`YOLOV8_SCALES`: n, s, m, l, x).
        reg_max: DFL bins per box side.

    Returns: `YoloModel`, images `(B, H, W, 3)` in [0, 1] -> list of
    `(B, H/s, W/s, 4 * reg_max + C)` raw float32 for s = 8, 16, 32.

    Example:
        >>> [o.shape for o in yolov8(num_classes=80).outputs]   # yolov8s
        [(None, 80, 80, 144), (None, 40, 40, 144), (None, 20, 20, 144)]
    """
    check_num_classes(num_classes)
    if not isinstance(reg_max, int) or reg_max < 1:
        raise ValueError(f"reg_max must be a positive int, got {reg_max!r}")
    c = lambda ch: channels(ch, width_multiple, max_channels)  # noqa: E731 - yaml shorthand
    d = lambda n: repeats(n, depth_multiple)  # noqa: E731
    kw = YOLOV8_CONV
    inputs = image_input(input_shape)
    # backbone
    x = ConvBNAct(c(64), 3, strides=2, name="m0", **kw)(inputs)                      # 0-P1/2
    x = ConvBNAct(c(128), 3, strides=2, name="m1", **kw)(x)                          # 1-P2/4
    x = apply_c2f(x, c(128), d(3), shortcut=True, name="m2", **kw)
    x = ConvBNAct(c(256), 3, strides=2, name="m3", **kw)(x)                          # 3-P3/8
    b4 = apply_c2f(x, c(256), d(6), shortcut=True, name="m4", **kw)
    x = ConvBNAct(c(512), 3, strides=2, name="m5", **kw)(b4)                         # 5-P4/16
    b6 = apply_c2f(x, c(512), d(6), shortcut=True, name="m6", **kw)
    x = ConvBNAct(c(1024), 3, strides=2, name="m7", **kw)(b6)                        # 7-P5/32
    x = apply_c2f(x, c(1024), d(3), shortcut=True, name="m8", **kw)
    b9 = apply_sppf(x, c(1024), 5, name="m9", **kw)
    # neck: top-down
    x = keras.layers.UpSampling2D(2, name="m10")(b9)
    x = keras.layers.Concatenate(name="m11")([x, b6])
    h12 = apply_c2f(x, c(512), d(3), name="m12", **kw)
    x = keras.layers.UpSampling2D(2, name="m13")(h12)
    x = keras.layers.Concatenate(name="m14")([x, b4])
    p3 = apply_c2f(x, c(256), d(3), name="m15", **kw)                                 # 15 (P3/8)
    # bottom-up
    x = ConvBNAct(c(256), 3, strides=2, name="m16", **kw)(p3)
    x = keras.layers.Concatenate(name="m17")([x, h12])
    p4 = apply_c2f(x, c(512), d(3), name="m18", **kw)                                 # 18 (P4/16)
    x = ConvBNAct(c(512), 3, strides=2, name="m19", **kw)(p4)
    x = keras.layers.Concatenate(name="m20")([x, b9])
    p5 = apply_c2f(x, c(1024), d(3), name="m21", **kw)                                # 21 (P5/32)
    outputs = apply_detect_head([p3, p4, p5], num_classes, reg_max, name=f"m{HEAD_INDEX}", **kw)
    model = YoloModel(inputs, outputs, name=name or "yolov8")
    initialize_biases(model, num_classes, name=f"m{HEAD_INDEX}")
    return model


def apply_detect_head(features, num_classes, reg_max=REG_MAX, name="detect", **conv_kwargs):
    """ultralytics 8 `Detect` (training outputs): per level concat(box_branch(p), class_branch(p)).

    box branch `{name}_cv2_{l}_{0,1,2}`: 3x3 Conv-BN-act, 3x3 Conv-BN-act, 1x1
    conv with bias to 4 reg_max; class branch `{name}_cv3_{l}_{0,1,2}`: the
    same to C. Widths from `head_widths(features[0] channels)`.

    Args:
        features: `[(B, H/s, W/s, C_l)]` in ascending stride.
        num_classes: C.
        reg_max: DFL bins per side.

    Returns: list of `(B, H/s, W/s, 4 reg_max + C)` float32 tensors, named `{name}_out{l}`.
    """
    box_width, class_width = head_widths(features[0].shape[-1], num_classes, reg_max)
    outputs = []
    for level, p in enumerate(features):
        branches = []
        for branch, width, out in (("cv2", box_width, 4 * reg_max), ("cv3", class_width, num_classes)):
            prefix = f"{name}_{branch}_{level}"
            y = ConvBNAct(width, 3, name=f"{prefix}_0", **conv_kwargs)(p)
            y = ConvBNAct(width, 3, name=f"{prefix}_1", **conv_kwargs)(y)
            branches.append(keras.layers.Conv2D(out, 1, use_bias=True, name=f"{prefix}_2")(y))
        # float32 even under mixed precision: the loss and decoding read these logits.
        outputs.append(keras.layers.Concatenate(dtype="float32", name=f"{name}_out{level}")(branches))
    return outputs


def initialize_biases(model, num_classes, strides=STRIDES, name=f"m{HEAD_INDEX}"):
    """ultralytics `Detect.bias_init`: box logits 2.0, class logits log(5 / C / (640 / s)^2)."""
    for level, stride in enumerate(strides):
        box = model.get_layer(f"{name}_cv2_{level}_2")
        box.bias.assign(np.full(box.bias.shape, BOX_BIAS_PRIOR, "float32"))
        cls = model.get_layer(f"{name}_cv3_{level}_2")
        prior = math.log(PRIOR_OBJECTS_PER_IMAGE / num_classes / (PRIOR_IMAGE_SIZE / stride) ** 2)
        cls.bias.assign(np.full(cls.bias.shape, prior, "float32"))


def yolov8_size(size, num_classes=80, input_shape=(640, 640, 3), **kwargs):
    """`yolov8` at a named scale of yolov8.yaml: `"n"`, `"s"`, `"m"`, `"l"` or `"x"`.

    Example:
        >>> yolov8_size("n").count_params()   # ultralytics: 3157200 incl. DFL's 16 fixed weights
        3157184
    """
    if size not in YOLOV8_SCALES:
        raise ValueError(f"size must be one of {sorted(YOLOV8_SCALES)}, got {size!r}")
    depth, width, max_channels = YOLOV8_SCALES[size]
    kwargs.setdefault("name", f"yolov8{size}")
    return yolov8(num_classes=num_classes, input_shape=input_shape, depth_multiple=depth,
                  width_multiple=width, max_channels=max_channels, **kwargs)


# The recipes' CPU-sized yolov8: yolov8n's depth at half its width (channels 8 ... 128).
SMALL_V8_SCALE = (0.33, 0.125, 1024)


def small_v8(num_classes=3, input_size=128, name="small_v8"):
    """A small yolov8 for quick experiments (shapes dataset, CPU): yolov8n's layout at half its width.

    Same blocks, head and outputs as `yolov8` (depth 0.33, width 0.125:
    channels 8, 16, 32, 64, 128 at strides 2 ... 32, one bottleneck a C2f;
    913k trainable parameters, 253k of them in Detect's 64-wide box branches).

    Args:
        num_classes: C.
        input_size: side of the square input images, a multiple of 32.

    Returns: `YoloModel`, `(B, S, S, 3)` -> `[(B, S/8, S/8, 64 + C), (B, S/16, ..), (B, S/32, ..)]`.

    Example:
        >>> model = small_v8(num_classes=3, input_size=128)
        >>> model.compile("adam", loss=YoloV8Loss(num_classes=3))
    """
    depth, width, max_channels = SMALL_V8_SCALE
    return yolov8(num_classes=num_classes, input_shape=(input_size, input_size, 3), depth_multiple=depth,
                  width_multiple=width, max_channels=max_channels, name=name)
