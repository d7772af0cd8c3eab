"""Cross mini-Batch Normalization (CmBN), YOLOv4 (Bochkovskiy et al. 2020,
Sec. 3.3 and Fig. 4).

With gradient accumulation one optimizer step (a "batch") is computed from
`T` mini-batches. Plain BatchNorm normalizes each mini-batch by its own
statistics; CmBN normalizes mini-batch `t` of the current batch by the
statistics of mini-batches `1..t` of that batch, collected as in Cross-
Iteration BN (Yao et al. 2020) but only within one batch, where the weights
do not change (so CBN's compensation terms vanish):

    μ_t = (1/t) Σ_{i≤t} mean(x_i),   ν_t = (1/t) Σ_{i≤t} mean(x_i²)
    σ²_t = ν_t − μ_t²
    y_t = γ (x_t − μ_t) / sqrt(σ²_t + ε) + β

Statistics of earlier mini-batches are constants (no gradient flows into
them). Mini-batches are weighted equally, so with equal sizes `μ_t, σ²_t`
are the mean and (biased) variance of the concatenated mini-batches. The
moving statistics used at inference follow `(μ_t, σ²_t)` with `momentum`.
At `accumulation_steps=1` this is BatchNormalization.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_yolo")
class CmBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose statistics accumulate over the mini-batches
    of one accumulated optimizer step (module docstring).

    The layer counts its training calls: calls `k·T + 1 .. (k+1)·T` form
    one batch (`T = accumulation_steps`, the optimizer's accumulation).

    Args:
        accumulation_steps: T, mini-batches per optimizer step.
        **kwargs: `keras.layers.BatchNormalization` arguments (`axis`,
            `momentum`, `epsilon`, ...); `synchronized` is not supported.

    Input/output: any shape, normalized over all axes but `axis`.

    Example:
        >>> x = keras.layers.Conv2D(32, 3, use_bias=False)(inputs)
        >>> x = CmBatchNormalization(accumulation_steps=4, momentum=0.97)(x)
    """

    def __init__(self, accumulation_steps=1, **kwargs):
        if kwargs.get("synchronized"):
            raise ValueError("CmBatchNormalization does not support "
                             "synchronized=True.")
        super().__init__(**kwargs)
        if int(accumulation_steps) < 1:
            raise ValueError("`accumulation_steps` must be >= 1; got "
                             f"{accumulation_steps}.")
        self.accumulation_steps = int(accumulation_steps)

    def build(self, input_shape):
        super().build(input_shape)
        shape = (input_shape[self.axis],)
        self.sum_mean = self.add_weight(
            shape=shape, initializer="zeros", trainable=False,
            name="cmbn_sum_mean")
        self.sum_square = self.add_weight(
            shape=shape, initializer="zeros", trainable=False,
            name="cmbn_sum_square")
        self.calls = self.add_weight(
            shape=(), initializer="zeros", trainable=False, dtype="int32",
            name="cmbn_calls")

    def call(self, inputs, training=None, mask=None):
        if not training or not self.trainable:  # frozen BN: inference
            return super().call(inputs, training=training, mask=mask)
        axis = self.axis % len(inputs.shape)
        reduce = [i for i in range(len(inputs.shape)) if i != axis]
        dtype = self.moving_mean.dtype   # float32 under mixed precision
        x = ops.cast(inputs, dtype)
        mean = ops.mean(x, axis=reduce)
        square = ops.mean(ops.square(x), axis=reduce)
        # Position in the batch: 0 at its first mini-batch (reset).
        position = ops.mod(self.calls, self.accumulation_steps)
        keep = ops.cast(position > 0, dtype)
        prior_mean = ops.stop_gradient(self.sum_mean * keep)
        prior_square = ops.stop_gradient(self.sum_square * keep)
        count = ops.cast(position + 1, dtype)
        total_mean = (prior_mean + mean) / count
        total_var = ops.maximum(
            (prior_square + square) / count - ops.square(total_mean), 0.0)
        self.sum_mean.assign(prior_mean + ops.stop_gradient(mean))
        self.sum_square.assign(prior_square + ops.stop_gradient(square))
        self.calls.assign(self.calls + 1)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + ops.stop_gradient(
            total_mean) * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m
                                    + ops.stop_gradient(total_var) * (1.0 - m))
        shape = [1] * len(inputs.shape)
        shape[axis] = inputs.shape[axis]
        out = (x - ops.reshape(total_mean, shape)) * ops.reshape(
            ops.rsqrt(total_var + self.epsilon), shape)
        if self.scale:
            out = out * ops.reshape(ops.cast(self.gamma, dtype), shape)
        if self.center:
            out = out + ops.reshape(ops.cast(self.beta, dtype), shape)
        return ops.cast(out, inputs.dtype)

    def get_config(self):
        return {**super().get_config(),
                "accumulation_steps": self.accumulation_steps}
