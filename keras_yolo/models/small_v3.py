"""A small three-scale YOLOv3-style detector.

YOLOv3's architecture at a fraction of its width and depth, for quick
experiments (the shapes dataset, CPU benchmarks):

- backbone: Darknet-53's pattern, a 3x3 stem then five stages of a stride-2
  3x3 convolution followed by residual blocks (1x1 to half the channels,
  3x3 back, added to the input); batch normalisation and leaky ReLU
  (slope 0.1, darknet's `leaky`) everywhere;
- neck: YOLOv3's FPN: at stride 32 a 1x1/3x3 convolution set; its 1x1
  reduction is upsampled x2 and concatenated with the stride-16 backbone
  features, another set, and again down to stride 8;
- heads: a 3x3 convolution then a 1x1 to `A * (5 + C)` raw outputs per cell,
  reshaped to `(B, H, W, A, 5 + C)`, levels in ascending stride (8, 16, 32),
  as `YoloV3Loss` and `YoloV3Decode` read them.
"""

import math

import keras
import numpy as np

from keras_yolo.models.yolo_model import YoloModel

LEAKY_SLOPE = 0.1  # darknet's leaky activation
# Initial objectness of every prediction (output bias): nearly all are
# background, so starting near 0 keeps the first steps' objectness gradient
# from swamping the others (the focal-loss paper's prior).
PRIOR_OBJECTNESS = 0.01
PRIOR_CLASS = 0.1  # initial logistic class probability


def _conv(x, filters, kernel_size, name, strides=1):
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides,
                            padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(momentum=0.97, name=f"{name}_bn")(x)
    return keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_leaky")(x)


def _residual(x, filters, name):
    y = _conv(x, filters // 2, 1, f"{name}_a")
    y = _conv(y, filters, 3, f"{name}_b")
    return keras.layers.Add(name=f"{name}_add")([x, y])


def _conv_set(x, filters, name):
    """YOLOv3's neck block: 1x1, 3x3, 1x1 (darknet's cfg has 5; 3 here)."""
    x = _conv(x, filters, 1, f"{name}_1")
    x = _conv(x, filters * 2, 3, f"{name}_2")
    return _conv(x, filters, 1, f"{name}_3")


def _head(x, filters, num_anchors, num_classes, name):
    x = _conv(x, filters, 3, f"{name}_conv")
    depth = 5 + num_classes
    bias = np.zeros((num_anchors, depth), np.float32)
    bias[:, 4] = math.log(PRIOR_OBJECTNESS / (1 - PRIOR_OBJECTNESS))
    bias[:, 5:] = math.log(PRIOR_CLASS / (1 - PRIOR_CLASS))
    out = keras.layers.Conv2D(
        num_anchors * depth, 1, name=f"{name}_out",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
    x = out(x)
    # Set after building (a constant array would not serialise as config).
    out.bias.assign(bias.reshape(-1))
    height, width = x.shape[1], x.shape[2]
    return keras.layers.Reshape((height, width, num_anchors, depth),
                                dtype="float32", name=f"{name}_raw")(x)


def small_v3(num_classes=3, input_size=128, num_anchors=3,
             filters=(16, 32, 64, 128, 256), blocks=(1, 1, 2, 2, 1),
             neck_filters=(32, 64, 128), name="small_v3"):
    """Builds the small three-scale model.

    Args:
        num_classes: C.
        input_size: side of the square input images, a multiple of 32.
        num_anchors: A, anchors per level.
        filters: channels of the five backbone stages (strides 2 .. 32).
        blocks: residual blocks per stage (Darknet-53: 1, 2, 8, 8, 4).
        neck_filters: channels of the neck at strides 8, 16, 32.

    Returns:
        `keras_yolo.models.YoloModel`: images `(B, S, S, 3)` in [0, 1] ->
        `[(B, S/8, S/8, A, 5+C), (B, S/16, ..), (B, S/32, ..)]` raw float32.

    Example:
        >>> model = small_v3(num_classes=3, input_size=128)
        >>> model.compile("adam", loss=YoloV3Loss(num_classes=3, anchors=...))
        >>> model.fit(shapes(image_size=128).batch(16))
    """
    if input_size % 32:
        raise ValueError(f"`input_size` must be a multiple of 32 (the "
                         f"coarsest stride); got {input_size}.")
    if len(filters) != 5 or len(blocks) != 5 or len(neck_filters) != 3:
        raise ValueError(
            "`filters` and `blocks` need 5 entries (strides 2..32) and "
            f"`neck_filters` 3 (strides 8, 16, 32); got filters={filters}, "
            f"blocks={blocks}, neck_filters={neck_filters}.")
    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = _conv(inputs, filters[0] // 2, 3, "stem")
    features = []
    for stage, (f, n) in enumerate(zip(filters, blocks)):
        x = _conv(x, f, 3, f"stage{stage}_down", strides=2)
        for block in range(n):
            x = _residual(x, f, f"stage{stage}_block{block}")
        features.append(x)
    c3, c4, c5 = features[2:]

    p5 = _conv_set(c5, neck_filters[2], "neck5")
    up = _conv(p5, neck_filters[1], 1, "neck5_reduce")
    up = keras.layers.UpSampling2D(2, name="neck5_up")(up)
    p4 = keras.layers.Concatenate(name="neck4_cat")([up, c4])
    p4 = _conv_set(p4, neck_filters[1], "neck4")
    up = _conv(p4, neck_filters[0], 1, "neck4_reduce")
    up = keras.layers.UpSampling2D(2, name="neck4_up")(up)
    p3 = keras.layers.Concatenate(name="neck3_cat")([up, c3])
    p3 = _conv_set(p3, neck_filters[0], "neck3")

    outputs = [
        _head(p, 2 * f, num_anchors, num_classes, f"head{level}")
        for level, (p, f) in enumerate(zip((p3, p4, p5), neck_filters))]
    return YoloModel(inputs, outputs, name=name)
