"""A small YOLOv5-style detector for quick experiments (shapes dataset, CPU).

ultralytics' yolov5 v6.0 layout at a fraction of its depth and width:

- backbone: a 6x6 stride-2 stem, then four stride-2 3x3 convolutions, each
  followed by a C3 block (CSP bottleneck with three convolutions), and SPPF
  at stride 32; every convolution is Conv-BN-SiLU (ultralytics' `Conv`,
  BN epsilon 1e-3, momentum 0.03);
- neck: PAN, top-down (1x1, upsample x2, concatenate, C3 without shortcut)
  to stride 8, then bottom-up (3x3 stride 2, concatenate, C3) to 16 and 32;
- heads: a 1x1 convolution per level to `A * (5 + C)` raw outputs,
  reshaped to `(B, H, W, A, 5 + C)`, levels in ascending stride
  (8, 16, 32), as `YoloV5Loss` and `YoloV5Decode` read them. Biases start at
  ultralytics' `_initialize_biases` priors (8 objects per image, class
  probability 0.6 / (C - 0.99999)), for the input size actually used.
"""

import math

import keras
import numpy as np

from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.layers.csp import apply_c3
from keras_yolo.layers.spp import apply_sppf
from keras_yolo.models.common import YOLOV5_CONV, detection_head
from keras_yolo.models.yolo_model import YoloModel

STRIDES = (8, 16, 32)
# ultralytics `_initialize_biases`: expected objects per image, and the
# initial class probability numerator.
PRIOR_OBJECTS_PER_IMAGE = 8.0
PRIOR_CLASS_PROB = 0.6
SPPF_POOL = 5  # ultralytics' SPPF kernel


def small_v5(num_classes=3, input_size=128, num_anchors=3,
             filters=(16, 32, 64, 128, 256), blocks=(1, 1, 1, 1),
             name="small_v5"):
    """Builds the small YOLOv5-style model.

    Args:
        num_classes: C.
        input_size: side of the square input images, a multiple of 32.
        num_anchors: A, anchors per level.
        filters: channels at strides 2, 4, 8, 16, 32 (yolov5n: 16 .. 256).
        blocks: bottlenecks in the backbone C3 blocks at strides 4 .. 32
            (yolov5n: 1, 2, 3, 1); the neck's C3 blocks use `blocks[-1]`.

    Returns:
        `keras_yolo.models.YoloModel`: images `(B, S, S, 3)` in [0, 1] ->
        `[(B, S/8, S/8, A, 5+C), (B, S/16, ..), (B, S/32, ..)]` raw float32.

    Example:
        >>> model = small_v5(num_classes=3, input_size=128)
        >>> model.compile("adam", loss=YoloV5Loss(num_classes=3))
        >>> model.fit(shapes(image_size=128).batch(16))
    """
    if input_size % STRIDES[-1]:
        raise ValueError(f"`input_size` must be a multiple of 32 (the "
                         f"coarsest stride); got {input_size}.")
    if len(filters) != 5 or len(blocks) != 4:
        raise ValueError(
            "`filters` needs 5 entries (strides 2..32) and `blocks` 4 "
            f"(strides 4..32); got filters={filters}, blocks={blocks}.")
    if int(num_classes) < 1:
        raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
    kw = YOLOV5_CONV
    c1, c2, c3, c4, c5 = filters
    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = ConvBNAct(c1, 6, strides=2, padding=2, name="stem", **kw)(inputs)
    x = ConvBNAct(c2, 3, strides=2, name="down4", **kw)(x)
    x = apply_c3(x, c2, blocks[0], name="c3_4", **kw)
    x = ConvBNAct(c3, 3, strides=2, name="down8", **kw)(x)
    b8 = apply_c3(x, c3, blocks[1], name="c3_8", **kw)
    x = ConvBNAct(c4, 3, strides=2, name="down16", **kw)(b8)
    b16 = apply_c3(x, c4, blocks[2], name="c3_16", **kw)
    x = ConvBNAct(c5, 3, strides=2, name="down32", **kw)(b16)
    x = apply_c3(x, c5, blocks[3], name="c3_32", **kw)
    x = apply_sppf(x, c5, SPPF_POOL, name="sppf", **kw)

    n = blocks[-1]
    # PAN, top-down.
    h32 = ConvBNAct(c4, 1, name="top32", **kw)(x)
    x = keras.layers.UpSampling2D(2, name="top32_up")(h32)
    x = keras.layers.Concatenate(name="top16_cat")([x, b16])
    x = apply_c3(x, c4, n, shortcut=False, name="top16_c3", **kw)
    h16 = ConvBNAct(c3, 1, name="top16", **kw)(x)
    x = keras.layers.UpSampling2D(2, name="top16_up")(h16)
    x = keras.layers.Concatenate(name="top8_cat")([x, b8])
    p3 = apply_c3(x, c3, n, shortcut=False, name="p3", **kw)
    # PAN, bottom-up.
    x = ConvBNAct(c3, 3, strides=2, name="bottom8", **kw)(p3)
    x = keras.layers.Concatenate(name="bottom16_cat")([x, h16])
    p4 = apply_c3(x, c4, n, shortcut=False, name="p4", **kw)
    x = ConvBNAct(c4, 3, strides=2, name="bottom16", **kw)(p4)
    x = keras.layers.Concatenate(name="bottom32_cat")([x, h32])
    p5 = apply_c3(x, c5, n, shortcut=False, name="p5", **kw)

    outputs = [detection_head(p, num_anchors, num_classes, name=f"head{i}")
               for i, p in enumerate((p3, p4, p5))]
    model = YoloModel(inputs, outputs, name=name)
    for i, stride in enumerate(STRIDES):
        bias = np.zeros((num_anchors, 5 + num_classes), np.float32)
        cells = (input_size / stride) ** 2
        bias[:, 4] = math.log(PRIOR_OBJECTS_PER_IMAGE / cells)
        bias[:, 5:] = math.log(PRIOR_CLASS_PROB / (num_classes - 0.99999))
        model.get_layer(f"head{i}_conv").bias.assign(bias.reshape(-1))
    return model
