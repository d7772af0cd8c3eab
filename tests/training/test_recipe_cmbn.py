"""CmBN (YOLOv4's Cross mini-Batch Normalization) against a numpy
reference: mini-batch t of an accumulated step is normalized by the mean
and variance of mini-batches 1..t of that step, concatenated."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.layers.cmbn import CmBatchNormalization

EPS = 1e-3


def numpy_cmbn(batches, steps, gamma, beta, eps=EPS):
    """Output of each mini-batch: statistics of the step's mini-batches so
    far, concatenated (channels last)."""
    out = []
    for t, x in enumerate(batches):
        first = t - t % steps
        seen = np.concatenate(batches[first:t + 1]).reshape(-1, x.shape[-1])
        mean, var = seen.mean(0), seen.var(0)
        out.append(gamma * (x - mean) / np.sqrt(var + eps) + beta)
    return out


def test_outputs_and_moving_statistics_equal_the_numpy_reference():
    rng = np.random.default_rng(0)
    steps, channels = 3, 4
    batches = [(rng.normal(size=(2, 5, 5, channels)) * (1 + t)
                + t).astype(np.float32) for t in range(7)]
    layer = CmBatchNormalization(accumulation_steps=steps, momentum=0.9,
                                 epsilon=EPS)
    layer.build((None, 5, 5, channels))
    gamma = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    beta = rng.normal(size=channels).astype(np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    expected = numpy_cmbn(batches, steps, gamma, beta)
    moving_mean, moving_var = np.zeros(channels), np.ones(channels)
    for t, x in enumerate(batches):
        y = layer(x, training=True).numpy()
        np.testing.assert_allclose(y, expected[t], rtol=1e-4, atol=1e-4,
                                   err_msg=f"mini-batch {t}")
        first = t - t % steps
        seen = np.concatenate(batches[first:t + 1]).reshape(-1, channels)
        moving_mean = 0.9 * moving_mean + 0.1 * seen.mean(0)
        moving_var = 0.9 * moving_var + 0.1 * seen.var(0)
    np.testing.assert_allclose(layer.moving_mean.numpy(), moving_mean,
                               rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), moving_var,
                               rtol=1e-5)
    # Inference uses the moving statistics, as BatchNormalization.
    x = batches[0]
    np.testing.assert_allclose(
        layer(x, training=False).numpy(),
        gamma * (x - moving_mean) / np.sqrt(moving_var + EPS) + beta,
        rtol=1e-4, atol=1e-4)


def test_one_step_is_batch_normalization_and_config_round_trips():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
    ours = CmBatchNormalization(accumulation_steps=1, epsilon=EPS)
    keras_bn = keras.layers.BatchNormalization(epsilon=EPS)
    for _ in range(2):
        np.testing.assert_allclose(ours(x, training=True).numpy(),
                                   keras_bn(x, training=True).numpy(),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(),
                               keras_bn.moving_variance.numpy(), rtol=1e-5)
    again = CmBatchNormalization.from_config(
        {**CmBatchNormalization(accumulation_steps=4).get_config()})
    assert again.accumulation_steps == 4
    with pytest.raises(ValueError, match="accumulation_steps"):
        CmBatchNormalization(accumulation_steps=0)


def test_gradient_flows_through_the_current_mini_batch_only():
    """d(sum w·y_t)/dx_t by finite differences of the numpy reference,
    earlier mini-batches held fixed; jit-compiled step."""
    rng = np.random.default_rng(2)
    batches = [rng.normal(size=(2, 3, 3, 2)).astype(np.float64)
               for _ in range(2)]
    w = rng.normal(size=batches[1].shape)
    layer = CmBatchNormalization(accumulation_steps=2, epsilon=EPS,
                                 dtype="float64")
    layer(batches[0].astype(np.float64), training=True)

    @tf.function(jit_compile=True)
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            total = tf.reduce_sum(y * w)
        return tape.gradient(total, x)

    # The step's second mini-batch (the layer's calls counter is at 1);
    # tracing and the run each call the layer once, so read the counter.
    layer.calls.assign(1)
    layer.sum_mean.assign(batches[0].mean((0, 1, 2)))
    layer.sum_square.assign((batches[0] ** 2).mean((0, 1, 2)))
    ours = grad(tf.constant(batches[1])).numpy()

    def f(x1):
        return (numpy_cmbn([batches[0], x1], 2, 1.0, 0.0)[1] * w).sum()

    numeric = np.zeros_like(batches[1])
    h = 1e-6
    for index in np.ndindex(batches[1].shape):
        plus, minus = batches[1].copy(), batches[1].copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = (f(plus) - f(minus)) / (2 * h)
    np.testing.assert_allclose(ours, numeric, rtol=1e-5, atol=1e-7)


def test_model_with_cmbn_serializes(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = CmBatchNormalization(accumulation_steps=2)(x)
    model = keras.Model(inputs, x)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[-1].accumulation_steps == 2
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(),
                               rtol=1e-5, atol=1e-5)
