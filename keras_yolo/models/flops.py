"""`flops(model, input_shape)`: floating-point operations of one forward pass.

FLOPs = 2 x multiply-accumulates of every convolution and dense layer
(2 * H_out * W_out * C_out * k² * C_in / groups; 2 * N_in * N_out), the
convention of ultralytics' reported GFLOPs (thop MACs x 2). Batch
normalisation (foldable into the convolution), biases, activations,
pooling and additions are not counted.
"""

import keras

from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.layers.sam import SpatialAttention
from keras_yolo.models.common import shapes_only


_COUNTED = (ConvBNAct, keras.layers.Conv2D, keras.layers.Dense, SpatialAttention)


def _conv_flops(conv, input_shape, output_shape):
    kernel_h, kernel_w = conv.kernel_size
    return 2 * output_shape[1] * output_shape[2] * output_shape[3] * kernel_h * kernel_w * (
        input_shape[-1] // conv.groups)


def _layer_flops(layer, input_shape, output_shape):
    if isinstance(layer, ConvBNAct):
        return _conv_flops(layer.conv, input_shape, output_shape)
    if isinstance(layer, keras.layers.Conv2D):
        return _conv_flops(layer, input_shape, output_shape)
    if isinstance(layer, keras.layers.Dense):
        return 2 * input_shape[-1] * output_shape[-1]
    if isinstance(layer, SpatialAttention):
        channels = input_shape[-1] if layer.mode == "pointwise" else 2
        k = layer.kernel_size
        out_channels = input_shape[-1] if layer.mode == "pointwise" else 1
        return 2 * input_shape[1] * input_shape[2] * out_channels * k * k * channels
    return 0


def flops(model, input_shape):
    """FLOPs of `model` for one image of `input_shape` `(H, W, 3)`.

    A model built for another (or a dynamic) size is rebuilt from its config at
    `input_shape` to read the feature-map sizes; weights do not matter.

    Example:
        >>> flops(build("yolov5s"), (640, 640, 3)) / 1e9   # about 16.5 GFLOPs
    """
    input_shape = tuple(int(s) for s in input_shape)
    if tuple(model.input_shape[1:]) != input_shape:
        config = model.get_config()
        for layer_config in config["layers"]:
            if layer_config["class_name"] == "InputLayer":
                layer_config["config"]["batch_shape"] = (None,) + input_shape
        with shapes_only():
            model = model.__class__.from_config(config)
    total = 0
    for layer in model.layers:
        if not isinstance(layer, _COUNTED):
            continue
        total += _layer_flops(layer, layer.input.shape, layer.output.shape)
    return int(total)
