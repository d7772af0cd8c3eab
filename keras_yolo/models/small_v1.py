"""A small YOLOv1-style detector: a few convolutions and a fully connected head.

The shape of the paper's network at a fraction of its size, for quick
experiments (the shapes dataset, tests, CPU benchmarks): stride-2 3x3
convolutions with batch normalisation and leaky ReLU (slope 0.1, darknet's
`leaky`), then, as in YOLOv1, flatten -> dense -> dropout -> dense to
`S * S * (Bx*5 + C)`, reshaped to the raw output `(B, S, S, Bx*5 + C)` that
`YoloV1Loss` and `YoloV1Decode` read. The paper's 24-layer network is
`keras_yolo.models.yolov1`.
"""

import math

import keras
import numpy as np

from keras_yolo.models.yolo_model import YoloModel

LEAKY_SLOPE = 0.1  # darknet's leaky activation
# Initial confidence of every box (through the output bias): most boxes are
# background, so starting near 0 keeps the first steps' noobj gradient small.
PRIOR_CONFIDENCE = 0.1
# Keras' (and darknet's) 0.99 leaves the moving statistics far from the
# batch statistics after a few hundred steps, and a fully connected head
# amplifies the mismatch between training and inference outputs; 0.9 follows
# the weights closely enough for short runs.
BATCH_NORM_MOMENTUM = 0.9


def _head_bias(grid_size, boxes_per_cell, num_classes, parametrization):
    depth = boxes_per_cell * 5 + num_classes
    bias = np.zeros((grid_size, grid_size, depth), np.float32)
    conf = (math.log(PRIOR_CONFIDENCE / (1 - PRIOR_CONFIDENCE))
            if parametrization == "logistic" else PRIOR_CONFIDENCE)
    bias[..., 4:boxes_per_cell * 5:5] = conf
    if parametrization == "linear":
        # Darknet reads raw values: start from centred boxes of side 0.25.
        bias[..., 0:boxes_per_cell * 5:5] = 0.5
        bias[..., 1:boxes_per_cell * 5:5] = 0.5
        bias[..., 2:boxes_per_cell * 5:5] = 0.5
        bias[..., 3:boxes_per_cell * 5:5] = 0.5
    return bias.reshape(-1)


def small_v1(num_classes=3, grid_size=7, boxes_per_cell=2, input_size=160,
             filters=(16, 32, 64, 128, 256), hidden_units=512, dropout=0.5,
             batch_norm_momentum=BATCH_NORM_MOMENTUM,
             parametrization="logistic", name="small_v1"):
    """Builds the small YOLOv1-style model.

    Args:
        num_classes: C.
        grid_size: S of the output grid (independent of the input size: the
            head is fully connected).
        boxes_per_cell: Bx, boxes predicted per cell.
        input_size: side of the square input images, a multiple of
            `2 ** len(filters)`.
        filters: channels of the stride-2 convolution stages.
        hidden_units: width of the first fully connected layer.
        dropout: dropout rate after it (the paper's 0.5).
        batch_norm_momentum: momentum of the batch normalisation moving
            statistics; `None` for no batch normalisation (convolutions with
            bias, as in the paper's network).
        parametrization: `"logistic"` or `"linear"`, only to set the output
            bias to a sensible starting point for `YoloV1Loss`'s matching
            parametrisation.

    Returns:
        `keras_yolo.models.YoloModel`: images `(B, input_size, input_size, 3)`
        in [0, 1] -> raw `(B, S, S, Bx*5 + C)` float32.

    Example:
        >>> model = small_v1(num_classes=3)
        >>> model.compile("adam", loss=YoloV1Loss(num_classes=3))
        >>> model.fit(shapes(image_size=160).batch(16))
    """
    if input_size % (2 ** len(filters)):
        raise ValueError(
            f"`input_size` must be a multiple of {2 ** len(filters)} "
            f"(one halving per entry of `filters`); got {input_size}.")
    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = inputs
    bn = batch_norm_momentum is not None
    for i, f in enumerate(filters):
        for suffix, strides in (("", 2), ("b", 1)):
            x = keras.layers.Conv2D(f, 3, strides=strides, padding="same",
                                    use_bias=not bn, name=f"conv{i}{suffix}")(x)
            if bn:
                x = keras.layers.BatchNormalization(
                    momentum=batch_norm_momentum, name=f"bn{i}{suffix}")(x)
            x = keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"leaky{i}{suffix}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(hidden_units, name="fc1")(x)
    x = keras.layers.LeakyReLU(LEAKY_SLOPE, name="fc1_leaky")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    depth = boxes_per_cell * 5 + num_classes
    head = keras.layers.Dense(
        grid_size * grid_size * depth, name="fc2",
        kernel_initializer=keras.initializers.VarianceScaling(0.1))
    x = head(x)
    # Set after building (a constant array would not serialise as config).
    head.bias.assign(
        _head_bias(grid_size, boxes_per_cell, num_classes, parametrization))
    raw = keras.layers.Reshape((grid_size, grid_size, depth), dtype="float32",
                               name="raw")(x)
    return YoloModel(inputs, raw, name=name)
