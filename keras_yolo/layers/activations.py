"""Activations of the YOLO family by their darknet / ultralytics names, and `Mish`."""

import keras
from keras import ops

# darknet's leaky ReLU slope (activations.h: `leaky_activate`: x > 0 ? x : .1 * x).
LEAKY_SLOPE = 0.1


def _leaky(x):
    return ops.leaky_relu(x, negative_slope=LEAKY_SLOPE)


def _linear(x):
    return x


_ACTIVATIONS = {
    "leaky": _leaky,
    "mish": keras.activations.mish,       # x tanh(softplus(x))  (YOLOv4 backbone)
    "silu": keras.activations.silu,       # x sigmoid(x)         (YOLOv5)
    "logistic": keras.activations.sigmoid,
    "relu": keras.activations.relu,
    "linear": _linear,
}


def activation_function(name):
    """The function for a darknet / ultralytics activation name.

    Example:
        >>> activation_function("leaky")(keras.ops.array([-1.0, 2.0]))   # [-0.1, 2.0]
    """
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]


@keras.saving.register_keras_serializable(package="keras_yolo")
class Mish(keras.layers.Layer):
    """Mish (Misra 2019), YOLOv4's backbone activation: y = x tanh(ln(1 + e^x)).

    Shapes: any -> same.

    Example:
        >>> Mish()(keras.ops.array([0.0, 1.0]))   # [0.0, 0.8651]
    """

    def call(self, inputs):
        return keras.activations.mish(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
