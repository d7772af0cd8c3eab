"""A small YOLOv2-style detector: Darknet-19's pattern with the passthrough layer.

YOLOv2's design at a fraction of its width, for quick experiments (the
shapes dataset, tests, CPU benchmarks): 3x3 convolutions with batch
normalisation and leaky ReLU (slope 0.1), 1x1 bottlenecks between them,
2x2 max pooling down to stride 32, and the passthrough: the stride-16
features, squeezed by a 1x1 convolution, are reorganised by `Reorg`
(space to depth, 2x2 patches into channels) and concatenated with the
stride-32 features before the last 3x3 convolution and the 1x1 output
convolution to `A * (5 + C)`, reshaped to `(B, H, W, A, 5 + C)` as
`YoloV2Loss` and `YoloV2Decode` read it. The paper's Darknet-19 network is
`keras_yolo.models.yolov2`.
"""

import math

import keras
import numpy as np

from keras_yolo.layers.reorg import Reorg
from keras_yolo.models.yolo_model import YoloModel

LEAKY_SLOPE = 0.1  # darknet's leaky activation
STRIDE = 32
# Initial objectness of every anchor (through the output bias): most anchors
# see background, so starting near 0 keeps the first noobj gradients small.
PRIOR_OBJECTNESS = 0.01


def _conv(x, filters, kernel_size, name):
    x = keras.layers.Conv2D(filters, kernel_size, padding="same",
                            use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_leaky")(x)


def _pool(x, name):
    return keras.layers.MaxPooling2D(2, name=name)(x)


def small_v2(num_classes=3, num_anchors=5, input_size=256, width=8,
             passthrough_filters=16, name="small_v2"):
    """Builds the small YOLOv2-style model.

    Args:
        num_classes: C.
        num_anchors: A, anchors per cell.
        input_size: side of the square input, a multiple of 32; the output
            grid is `input_size / 32`.
        width: channels of the first convolution; stage k has `width * 2**k`.
        passthrough_filters: channels of the 1x1 convolution before `Reorg`
            (YOLOv2: 64 of the 512 stride-16 channels).

    Returns:
        `keras_yolo.models.YoloModel`: images `(B, S, S, 3)` in [0, 1] ->
        raw `(B, S/32, S/32, A, 5 + C)` float32.

    Example:
        >>> model = small_v2(num_classes=3)
        >>> model.compile("adam", loss=YoloV2Loss(num_classes=3, anchors=...))
        >>> model.fit(shapes(image_size=256).batch(16))
    """
    if input_size % STRIDE:
        raise ValueError(
            f"`input_size` must be a multiple of {STRIDE}; got {input_size}.")
    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = _pool(_conv(inputs, width, 3, "conv1"), "pool1")              # /2
    x = _pool(_conv(x, 2 * width, 3, "conv2"), "pool2")               # /4
    x = _conv(x, 4 * width, 3, "conv3")
    x = _conv(x, 2 * width, 1, "conv4")
    x = _pool(_conv(x, 4 * width, 3, "conv5"), "pool3")               # /8
    x = _conv(x, 8 * width, 3, "conv6")
    x = _conv(x, 4 * width, 1, "conv7")
    x = _pool(_conv(x, 8 * width, 3, "conv8"), "pool4")               # /16
    x = _conv(x, 16 * width, 3, "conv9")
    x = _conv(x, 8 * width, 1, "conv10")
    fine = _conv(x, 16 * width, 3, "conv11")
    x = _pool(fine, "pool5")                                          # /32
    x = _conv(x, 32 * width, 3, "conv12")
    x = _conv(x, 16 * width, 1, "conv13")
    x = _conv(x, 32 * width, 3, "conv14")
    x = _conv(x, 32 * width, 3, "conv15")
    # Passthrough: stride-16 detail stacked into channels at stride 32.
    passthrough = _conv(fine, passthrough_filters, 1, "passthrough")
    passthrough = Reorg(2, name="reorg")(passthrough)
    x = keras.layers.Concatenate(name="route")([passthrough, x])
    x = _conv(x, 32 * width, 3, "conv16")
    depth = 5 + num_classes
    head = keras.layers.Conv2D(
        num_anchors * depth, 1, name="head",
        kernel_initializer=keras.initializers.VarianceScaling(0.1))
    x = head(x)
    bias = np.zeros((num_anchors, depth), np.float32)
    bias[:, 4] = math.log(PRIOR_OBJECTNESS / (1 - PRIOR_OBJECTNESS))
    head.bias.assign(bias.reshape(-1))
    grid = input_size // STRIDE
    raw = keras.layers.Reshape((grid, grid, num_anchors, depth),
                               dtype="float32", name="raw")(x)
    return YoloModel(inputs, raw, name=name)
