"""`WeightedResidual`: multi-input weighted residual connections (MiWRC, YOLOv4's BoS)."""

import keras
from keras import ops

# EfficientDet's fast normalised fusion keeps the denominator away from 0 with 1e-4.
FUSION_EPSILON = 1e-4


@keras.saving.register_keras_serializable(package="keras_yolo")
class WeightedResidual(keras.layers.Layer):
    """y = Σ_i w_i x_i / (ε + Σ_j w_j),  w_i = ReLU(v_i) learned, v_i initialised to 1.

    The multi-input weighted residual connection of the YOLOv4 paper's bag of
    specials, in EfficientDet's (Tan et al. 2020) fast normalised fusion form:
    every input of a residual sum gets a learned non-negative weight. With all
    weights 1 and ε -> 0 it is the mean of the inputs.

    Args:
        epsilon: ε.

    Shapes: a list of `n` tensors of equal shape -> that shape.

    Example:
        >>> WeightedResidual()([keras.ops.ones((1, 4, 4, 8)), keras.ops.zeros((1, 4, 4, 8))])  # ~0.5
    """

    def __init__(self, epsilon=FUSION_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2 or not isinstance(
                input_shape[0], (list, tuple)):
            raise ValueError(f"WeightedResidual takes a list of >= 2 tensors, got shapes {input_shape!r}")
        self.fusion_weights = self.add_weight(
            name="fusion_weights", shape=(len(input_shape),), initializer="ones", trainable=True)
        self.built = True

    def call(self, inputs):
        weights = ops.relu(ops.cast(self.fusion_weights, inputs[0].dtype))
        weights = weights / (ops.sum(weights) + self.epsilon)
        return sum(weights[i] * x for i, x in enumerate(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
