"""Spatial pyramid pooling: SPP (YOLOv3-SPP, YOLOv4) and SPPF (YOLOv5)."""

import keras
from keras import ops

from keras_yolo.layers.conv_bn import ConvBNAct


@keras.saving.register_keras_serializable(package="keras_yolo")
class SpatialPyramidPooling(keras.layers.Layer):
    """Concatenation of stride-1 max pools of several sizes with the input.

    y = concat(maxpool_k1(x), maxpool_k2(x), ..., x) along channels (`input_last=True`,
    darknet's `[route] layers=-1,-3,-5,-6` after pools 5, 9, 13, i.e. pools 13, 9, 5 then x)
    or concat(x, maxpool_k1(x), ...) (`input_last=False`, ultralytics `SPP`).
    Pools pad with -inf (`"same"`), as darknet and torch's implicit padding do.

    Args:
        pool_sizes: kernel sizes, in concatenation order.
        input_last: put the input after the pooled maps instead of before.

    Shapes: `(B, H, W, C)` -> `(B, H, W, (len(pool_sizes) + 1) * C)`.

    Example:
        >>> SpatialPyramidPooling((13, 9, 5))(keras.ops.ones((1, 19, 19, 512))).shape
        (1, 19, 19, 2048)
    """

    def __init__(self, pool_sizes=(13, 9, 5), input_last=True, **kwargs):
        super().__init__(**kwargs)
        self.pool_sizes = tuple(int(k) for k in pool_sizes)
        if not self.pool_sizes or min(self.pool_sizes) < 1:
            raise ValueError(f"pool_sizes must be positive sizes, got {pool_sizes!r}")
        self.input_last = bool(input_last)

    def call(self, inputs):
        pooled = [ops.max_pool(inputs, k, strides=1, padding="same") for k in self.pool_sizes]
        return ops.concatenate(pooled + [inputs] if self.input_last else [inputs] + pooled, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] * (len(self.pool_sizes) + 1),)

    def get_config(self):
        config = super().get_config()
        config.update({"pool_sizes": list(self.pool_sizes), "input_last": self.input_last})
        return config


@keras.saving.register_keras_serializable(package="keras_yolo")
class SequentialMaxPool(keras.layers.Layer):
    """SPPF's pooling: y1 = mp(x), y2 = mp(y1), y3 = mp(y2); output concat(x, y1, y2, y3).

    Three chained k x k pools see the same windows as SPP's k, 2k - 1, 3k - 2
    pools (5 -> 5, 9, 13) at a third of the cost.

    Shapes: `(B, H, W, C)` -> `(B, H, W, (repeats + 1) * C)`.

    Example:
        >>> SequentialMaxPool(5)(keras.ops.ones((1, 20, 20, 256))).shape
        (1, 20, 20, 1024)
    """

    def __init__(self, pool_size=5, repeats=3, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.repeats = int(repeats)
        if self.pool_size < 1 or self.repeats < 1:
            raise ValueError(f"pool_size and repeats must be >= 1, got {pool_size!r}, {repeats!r}")

    def call(self, inputs):
        outputs = [inputs]
        for _ in range(self.repeats):
            outputs.append(ops.max_pool(outputs[-1], self.pool_size, strides=1, padding="same"))
        return ops.concatenate(outputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] * (self.repeats + 1),)

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "repeats": self.repeats})
        return config


def apply_sppf(x, filters, pool_size=5, name="sppf", **conv_kwargs):
    """YOLOv5's SPPF: cv2(concat(c, mp(c), mp²(c), mp³(c))) with c = cv1(x), cv1 halving channels.

    Args:
        x: `(B, H, W, C)` tensor.
        filters: output channels of cv2.
        conv_kwargs: passed to both `ConvBNAct` (activation, BN settings).

    Returns: `(B, H, W, filters)`.
    """
    hidden = x.shape[-1] // 2
    x = ConvBNAct(hidden, 1, name=f"{name}_cv1", **conv_kwargs)(x)
    x = SequentialMaxPool(pool_size, name=f"{name}_pool")(x)
    return ConvBNAct(filters, 1, name=f"{name}_cv2", **conv_kwargs)(x)
