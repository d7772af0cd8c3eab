"""`DropBlock`: DropBlock regularisation (Ghiasi et al. 2018), YOLOv4's bag of freebies.

A serialisable wrapper over `keras_cv.layers.DropBlock2D`, imported only when the
layer is created so that importing `keras_yolo` does not pay for keras-cv.
"""

import keras


@keras.saving.register_keras_serializable(package="keras_yolo")
class DropBlock(keras.layers.Layer):
    """Drops contiguous `block_size x block_size` regions while training; identity at inference.

    γ = rate / block_size² · (H W) / ((H - block_size + 1)(W - block_size + 1)) seeds
    are drawn, each grown to a block; kept activations are rescaled by
    (number of positions / number kept) (keras-cv's `DropBlock2D`).

    Args:
        rate: probability of dropping an activation (darknet `[dropout] probability`).
        block_size: side of a dropped block (darknet `dropblock_size_abs`).
        seed: random seed.

    Shapes: `(B, H, W, C)` -> same.

    Example:
        >>> DropBlock(0.1, 7)(keras.ops.ones((2, 16, 16, 8)), training=True).shape
        (2, 16, 16, 8)
    """

    def __init__(self, rate=0.1, block_size=7, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate!r}")
        if int(block_size) < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size!r}")
        import keras_cv  # noqa: PLC0415 - heavy optional import, deferred on purpose

        self.rate = float(rate)
        self.block_size = int(block_size)
        self.seed = seed
        self.dropblock = keras_cv.layers.DropBlock2D(rate=self.rate, block_size=self.block_size,
                                                     seed=seed, dtype=self.dtype_policy, name="dropblock")

    def build(self, input_shape):
        self.dropblock.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        return self.dropblock(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "block_size": self.block_size, "seed": self.seed})
        return config
