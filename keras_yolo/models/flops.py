"""`flops(model, input_shape)`: floating-point operations of one forward pass.

FLOPs = 2 x multiply-accumulates of every convolution and dense layer
(2 * H_out * W_out * C_out * k² * C_in / groups; 2 * N_in * N_out), the
convention of ultralytics' reported GFLOPs (thop MACs x 2). Batch
normalisation (foldable into the convolution), biases, activations,
pooling and additions are not counted.
"""

import keras

from keras_yolo import keras_compat
from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.layers.sam import SpatialAttention


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

    The graph is traced symbolically at `input_shape` (no weights are touched),
    so a model built for any size (or for `(None, None, 3)`) reports the FLOPs of
    any other size its layers accept; models with dense layers (YOLOv1) only at
    their own size.

    Example:
        >>> flops(build("yolov5s"), (640, 640, 3)) / 1e9   # about 16.5 GFLOPs
    """
    input_shape = tuple(int(s) for s in input_shape)
    built_shape = tuple(model.input_shape[1:])
    has_dense = any(isinstance(layer, keras.layers.Dense) for layer in model.layers)
    if has_dense and built_shape != input_shape:
        raise ValueError(f"input_shape must be {built_shape} for a model with dense layers, got {input_shape}")
    total = 0

    def trace(operation, *args, **kwargs):
        nonlocal total
        outputs = operation.compute_output_spec(*args, **kwargs)
        if isinstance(operation, _COUNTED):
            total += _layer_flops(operation, args[0].shape, outputs.shape)
        return outputs

    # Functional models run their graph with a per-layer hook; Keras has no public one.
    keras_compat.run_through_graph(model, [keras.KerasTensor((1,) + input_shape)], trace)
    return int(total)
