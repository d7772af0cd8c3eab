"""ConvBNAct's fused TensorFlow training path (FusedBatchNormV3, SiLU with a
saved sigmoid) against float64 numpy batch normalisation and against Keras'
own BatchNormalization + activation path, in eager and graph modes; under XLA
the layer keeps Keras' path."""

import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.layers import ConvBNAct

RNG = np.random.default_rng(0)
MOMENTUM, EPS = 0.97, 1e-3


def _layer(kernel_size, strides, padding, activation, groups=1):
    layer = ConvBNAct(8, kernel_size, strides=strides, padding=padding, activation=activation,
                      groups=groups, batch_norm_momentum=MOMENTUM, batch_norm_epsilon=EPS)
    x = (RNG.normal(size=(2, 12, 12, 4)) * 2 + 0.5).astype("float32")
    layer.build(x.shape)
    layer.bn.gamma.assign(RNG.uniform(0.5, 1.5, 8))
    layer.bn.beta.assign(RNG.normal(size=8))
    layer.bn.moving_mean.assign(RNG.normal(size=8))
    layer.bn.moving_variance.assign(RNG.uniform(0.5, 2.0, 8))
    return layer, x


def _step(layer, x, fused, mode):
    """Output, gradients of sum(y² / 2 + y cos(i)) and the moving statistics
    after one training call, the layer's weights restored afterwards."""
    layer.fused_training_applies = (
        (lambda training: ConvBNAct.fused_training_applies(layer, training)) if fused
        else (lambda training: False))

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            wave = tf.reshape(tf.cos(tf.range(tf.size(y), dtype=tf.float32)), tf.shape(y))
            loss = tf.reduce_sum(0.5 * y * y + wave * y)
        return y, tape.gradient(loss, [x] + layer.trainable_weights)

    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla")
    saved = [v.numpy() for v in layer.weights]
    y, grads = step(tf.constant(x))
    out = [y.numpy()] + [g.numpy() for g in grads] + [layer.bn.moving_mean.numpy(),
                                                      layer.bn.moving_variance.numpy()]
    for variable, value in zip(layer.weights, saved):
        variable.assign(value)
    del layer.fused_training_applies
    return out


@pytest.mark.parametrize("kernel_size, strides, padding, activation", [
    (3, 2, None, "silu"), (6, 2, 2, "silu"), (1, 1, None, "silu"), (3, 1, None, "leaky")])
def test_fused_training_step_is_batch_norm_of_the_batch(kernel_size, strides, padding, activation):
    layer, x = _layer(kernel_size, strides, padding, activation)
    assert layer.fused_training_applies(True) and not layer.fused_training_applies(False)
    gamma, beta = layer.bn.gamma.numpy().astype(np.float64), layer.bn.beta.numpy().astype(np.float64)
    mean0 = layer.bn.moving_mean.numpy().astype(np.float64)
    var0 = layer.bn.moving_variance.numpy().astype(np.float64)
    pad = kernel_size // 2 if padding is None else padding
    z = tf.nn.conv2d(np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))).astype(np.float64),
                     layer.conv.kernel.numpy().astype(np.float64), strides, "VALID").numpy()
    mean, var = z.mean((0, 1, 2)), z.var((0, 1, 2))     # biased, as Keras normalises and tracks
    t = gamma * (z - mean) / np.sqrt(var + EPS) + beta
    want = t / (1 + np.exp(-t)) if activation == "silu" else np.where(t > 0, t, 0.1 * t)
    for mode in ("eager", "graph", "xla"):     # XLA: Keras' path, same values
        y, *_, moving_mean, moving_var = _step(layer, x, True, mode)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(moving_mean, MOMENTUM * mean0 + (1 - MOMENTUM) * mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(moving_var, MOMENTUM * var0 + (1 - MOMENTUM) * var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel_size, strides, padding, activation, groups", [
    (3, 2, None, "silu", 1), (6, 2, 2, "silu", 1), (1, 1, None, "silu", 1),
    (3, 1, None, "leaky", 1), (3, 1, None, "mish", 2)])
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_fused_training_gradients_equal_keras_batch_norm(kernel_size, strides, padding, activation,
                                                         groups, mode):
    layer, x = _layer(kernel_size, strides, padding, activation, groups)
    keras_path = _step(layer, x, False, mode)
    fused_path = _step(layer, x, True, mode)
    names = ["y", "dx"] + [w.name for w in layer.trainable_weights] + ["moving_mean", "moving_variance"]
    for name, want, got in zip(names, keras_path, fused_path):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(), err_msg=name)


def test_frozen_or_inference_calls_keep_keras_path():
    layer, _ = _layer(3, 1, None, "silu")
    layer.bn.trainable = False
    assert not layer.fused_training_applies(True)
    layer.bn.trainable = True
    assert layer.fused_training_applies(True) and not layer.fused_training_applies(None)
    assert not ConvBNAct(8, 1, use_batch_norm=False).fused_training_applies(True)
    assert not ConvBNAct(8, 1, synchronized=True).fused_training_applies(True)


def test_xla_traced_calls_keep_keras_path():
    layer, x = _layer(3, 1, None, "silu")
    taken = []

    @tf.function(jit_compile=True)
    def step(x):
        taken.append(layer.fused_training_applies(True))
        return layer(x, training=True)

    step(tf.constant(x))
    assert taken == [False]
    assert tf.function(lambda: tf.constant(layer.fused_training_applies(True)))().numpy()


def test_one_xla_step_of_a_deep_network_equals_the_fused_graph_step():
    # yolov2-tiny's BN / leaky / stride-2 pool stack: the network where XLA's compilation of
    # FusedBatchNormV3's gradient goes wrong; the XLA step must match the fused graph step.
    import keras
    from keras_yolo import models

    keras.utils.set_random_seed(0)
    model = models.build("yolov2-tiny", num_classes=2, input_shape=(64, 64, 3))
    images = tf.constant(RNG.uniform(size=(2, 64, 64, 3)).astype("float32"))

    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)))
        return tape.gradient(loss, model.trainable_weights)

    saved = [v.numpy() for v in model.weights]
    fused = [g.numpy() for g in tf.function(grads)(images)]
    for variable, value in zip(model.weights, saved):
        variable.assign(value)
    compiled = [g.numpy() for g in tf.function(grads, jit_compile=True)(images)]
    for weight, want, got in zip(model.trainable_weights, fused, compiled):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max(), err_msg=weight.path)
