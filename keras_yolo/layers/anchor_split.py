"""`AnchorSplit`: a head's flat channels to the raw-output contract `(B, H, W, A, 5 + C)`."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_yolo")
class AnchorSplit(keras.layers.Layer):
    """`(B, H, W, A * K)` -> `(B, H, W, A, K)`, anchor-major as darknet and ultralytics lay them out.

    Runs in float32 by default, so a mixed-precision model still hands its loss
    float32 outputs (Keras' advice for the last layer).

    Args:
        num_anchors: A.

    Example:
        >>> AnchorSplit(3)(keras.ops.ones((1, 20, 20, 255))).shape
        (1, 20, 20, 3, 85)
    """

    def __init__(self, num_anchors, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_anchors) < 1:
            raise ValueError(f"num_anchors must be >= 1, got {num_anchors!r}")
        self.num_anchors = int(num_anchors)

    def call(self, inputs):
        shape = ops.shape(inputs)
        channels = inputs.shape[-1]
        if channels % self.num_anchors:
            raise ValueError(f"channels ({channels}) must be a multiple of num_anchors ({self.num_anchors})")
        return ops.reshape(inputs, (shape[0], shape[1], shape[2], self.num_anchors,
                                    channels // self.num_anchors))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.num_anchors, input_shape[3] // self.num_anchors)

    def get_config(self):
        config = super().get_config()
        config.update({"num_anchors": self.num_anchors})
        return config
