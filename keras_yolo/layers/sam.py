"""`SpatialAttention`: the SAM block (CBAM's, and YOLOv4's point-wise modification)."""

import keras
from keras import ops

from keras_yolo.layers.conv_bn import ConvBNAct


@keras.saving.register_keras_serializable(package="keras_yolo")
class SpatialAttention(keras.layers.Layer):
    """y = x ⊙ σ(a(x)).

    `mode="pointwise"` (YOLOv4's modified SAM, darknet `[convolutional] activation=logistic`
    then `[sam]`): a(x) = BN(conv_k(x)) with C filters, one attention value per position
    and channel. `mode="spatial"` (CBAM, Woo et al. 2018): a(x) = conv_k([mean_c(x), max_c(x)])
    with one filter, one attention value per position broadcast over channels.

    Args:
        mode: `"pointwise"` or `"spatial"`.
        kernel_size: k (1 for YOLOv4's SAM, 7 in CBAM).

    Shapes: `(B, H, W, C)` -> same.

    Example:
        >>> SpatialAttention()(keras.ops.ones((1, 8, 8, 16))).shape
        (1, 8, 8, 16)
    """

    def __init__(self, mode="pointwise", kernel_size=1, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("pointwise", "spatial"):
            raise ValueError(f"mode must be 'pointwise' or 'spatial', got {mode!r}")
        self.mode = mode
        self.kernel_size = int(kernel_size)
        self.attention = None

    def build(self, input_shape):
        channels = input_shape[-1] if self.mode == "pointwise" else 1
        self.attention = ConvBNAct(channels, self.kernel_size, activation="logistic",
                                   use_batch_norm=self.mode == "pointwise",
                                   dtype=self.dtype_policy, name="attention")
        in_channels = input_shape[-1] if self.mode == "pointwise" else 2
        self.attention.build(tuple(input_shape[:-1]) + (in_channels,))
        self.built = True

    def call(self, inputs, training=None):
        if self.mode == "pointwise":
            return inputs * self.attention(inputs, training=training)
        pooled = ops.concatenate([ops.mean(inputs, axis=-1, keepdims=True),
                                  ops.max(inputs, axis=-1, keepdims=True)], axis=-1)
        return inputs * self.attention(pooled, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "kernel_size": self.kernel_size})
        return config
