"""The blocks of keras_yolo.layers against float64 numpy derivations of their formulas."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from darknet_reorg_reference import reorg_cpu
from keras_yolo import layers
from references import sigmoid

RNG = np.random.default_rng(0)


def _conv2d(x, kernel, stride, pad, groups=1):
    """Direct float64 convolution: y[b,i,j,o] = Σ_{dy,dx,c} xpad[b, s i + dy, s j + dx, c] W[dy,dx,c,o]."""
    x = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k, _, cin_g, cout = kernel.shape
    out_h = (x.shape[1] - k) // stride + 1
    out_w = (x.shape[2] - k) // stride + 1
    y = np.zeros((x.shape[0], out_h, out_w, cout))
    cout_g = cout // groups
    for o in range(cout):
        g = o // cout_g
        for i in range(out_h):
            for j in range(out_w):
                patch = x[:, stride * i:stride * i + k, stride * j:stride * j + k, g * cin_g:(g + 1) * cin_g]
                y[:, i, j, o] = np.sum(patch * kernel[..., o], axis=(1, 2, 3))
    return y


def _max_pool_same(x, k):
    """Stride-1 k x k max pool, padding k // 2 cells of -inf on every side."""
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf)
    out = np.full(x.shape, -np.inf)
    for dy in range(k):
        for dx in range(k):
            out = np.maximum(out, xp[:, dy:dy + x.shape[1], dx:dx + x.shape[2]])
    return out


def _roundtrip(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    return clone


@pytest.mark.parametrize("activation, reference", [
    ("leaky", lambda x: np.where(x > 0, x, 0.1 * x)),
    ("mish", lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    ("silu", lambda x: x * sigmoid(x)),
    ("logistic", sigmoid),
    ("linear", lambda x: x),
])
def test_activations_match_their_formulas(activation, reference):
    x = np.linspace(-6, 6, 61)
    got = keras.ops.convert_to_numpy(layers.activation_function(activation)(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(got, reference(x), rtol=1e-6, atol=1e-7)


def test_mish_layer_is_x_tanh_softplus():
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0], "float32")
    got = keras.ops.convert_to_numpy(layers.Mish()(x))
    np.testing.assert_allclose(got, x * np.tanh(np.log1p(np.exp(x.astype(np.float64)))), rtol=1e-6, atol=1e-7)


def test_unknown_activation_names_the_argument():
    with pytest.raises(ValueError, match="activation must be one of"):
        layers.ConvBNAct(8, activation="swish2")


@pytest.mark.parametrize("kernel_size, strides, groups", [(3, 2, 1), (3, 1, 2), (1, 1, 1), (6, 2, 1)])
def test_conv_bn_act_is_bn_of_a_symmetrically_padded_conv(kernel_size, strides, groups):
    x = RNG.normal(size=(2, 12, 12, 4)).astype("float32")
    padding = 2 if kernel_size == 6 else None   # yolov5's 6x6 stem pads 2
    layer = layers.ConvBNAct(6, kernel_size, strides=strides, padding=padding, groups=groups,
                             activation="leaky", batch_norm_epsilon=1e-3)
    layer.build(x.shape)
    kernel = RNG.normal(size=layer.conv.kernel.shape).astype("float32")
    gamma, beta = RNG.uniform(0.5, 1.5, 6), RNG.normal(size=6)
    mean, var = RNG.normal(size=6), RNG.uniform(0.5, 2.0, 6)
    layer.conv.kernel.assign(kernel)
    layer.bn.set_weights([gamma, beta, mean, var])
    got = keras.ops.convert_to_numpy(layer(x, training=False))
    pad = kernel_size // 2 if padding is None else padding
    z = _conv2d(x, kernel.astype(np.float64), strides, pad, groups)
    z = gamma * (z - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(got, np.where(z > 0, z, 0.1 * z), rtol=1e-4, atol=1e-4)
    assert got.shape == layer.compute_output_shape(x.shape)


def test_conv_bn_act_without_bn_has_a_bias_and_round_trips():
    layer = layers.ConvBNAct(5, 1, use_batch_norm=False, activation="linear")
    layer.build((1, 4, 4, 3))
    assert layer.bn is None and layer.conv.use_bias
    assert layer.count_params() == 3 * 5 + 5
    clone = _roundtrip(layer)
    clone.build((1, 4, 4, 3))
    assert clone.count_params() == 3 * 5 + 5


def test_conv_bn_act_parameters_are_darknets_weights_count():
    # darknet writes biases, scales, rolling mean, rolling variance (4 n) and n c k k weights.
    layer = layers.ConvBNAct(32, 3)
    layer.build((1, 8, 8, 16))
    assert layer.count_params() == 32 * 16 * 9 + 4 * 32


def test_conv_bn_act_rejects_bad_arguments():
    with pytest.raises(ValueError, match="filters"):
        layers.ConvBNAct(0)
    with pytest.raises(ValueError, match="strides"):
        layers.ConvBNAct(8, 3, strides=0)


def _reorg_seed(x, s):
    b, h, w, c = x.shape
    y = np.zeros((b, h // s, w // s, s * s * c), x.dtype)
    for i in range(h // s):
        for j in range(w // s):
            for dy in range(s):
                for dx in range(s):
                    y[:, i, j, (dy * s + dx) * c:(dy * s + dx + 1) * c] = x[:, s * i + dy, s * j + dx, :]
    return y


def _reorg_darknet(x, s):
    """darknet's reorg_cpu(x, w, h, c, batch, stride, forward=0, out) on NCHW buffers."""
    b, h, w, c = x.shape
    out = reorg_cpu(np.transpose(x, (0, 3, 1, 2)).reshape(-1), w, h, c, b, s, forward=0)
    return np.transpose(out.reshape(b, c * s * s, h // s, w // s), (0, 2, 3, 1))


def test_reorg_stacks_each_patch_into_channels():
    x = RNG.normal(size=(2, 6, 4, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(layers.Reorg(2)(x))
    np.testing.assert_array_equal(got, _reorg_seed(x, 2))
    np.testing.assert_array_equal(got, tf.nn.space_to_depth(x, 2).numpy())


def test_reorg_darknet_order_reproduces_reorg_cpu():
    x = RNG.normal(size=(2, 4, 6, 8)).astype("float32")
    layer = _roundtrip(layers.Reorg(2, darknet_order=True))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), _reorg_darknet(x, 2))


def test_spp_concatenates_pools_in_darknet_order():
    x = RNG.normal(size=(1, 9, 7, 2)).astype("float32")
    got = keras.ops.convert_to_numpy(layers.SpatialPyramidPooling((13, 9, 5), input_last=True)(x))
    want = np.concatenate([_max_pool_same(x, 13), _max_pool_same(x, 9), _max_pool_same(x, 5), x], -1)
    np.testing.assert_array_equal(got, want)
    first = keras.ops.convert_to_numpy(layers.SpatialPyramidPooling((5, 9, 13), input_last=False)(x))
    np.testing.assert_array_equal(first[..., :2], x)


def test_sppf_pools_see_the_windows_of_spp_5_9_13():
    x = RNG.normal(size=(1, 16, 16, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(layers.SequentialMaxPool(5)(x))
    want = np.concatenate([x, _max_pool_same(x, 5), _max_pool_same(x, 9), _max_pool_same(x, 13)], -1)
    np.testing.assert_array_equal(got, want)


def test_sppf_block_halves_then_restores_channels():
    inputs = keras.Input((16, 16, 32))
    model = keras.Model(inputs, layers.apply_sppf(inputs, 64, name="sppf"))
    # cv1 1x1 32->16 with BN, cv2 1x1 64->64 with BN
    assert model.count_params() == (32 * 16 + 4 * 16) + (64 * 64 + 4 * 64)
    assert model.output_shape == (None, 16, 16, 64)


def test_pointwise_sam_is_x_times_sigmoid_of_bn_conv():
    x = RNG.normal(size=(2, 5, 5, 4)).astype("float32")
    layer = layers.SpatialAttention("pointwise", 1)
    layer.build(x.shape)
    kernel = RNG.normal(size=(1, 1, 4, 4))
    gamma, beta, mean, var = RNG.uniform(0.5, 1.5, 4), RNG.normal(size=4), RNG.normal(size=4), RNG.uniform(0.5, 2, 4)
    layer.attention.conv.kernel.assign(kernel)
    layer.attention.bn.set_weights([gamma, beta, mean, var])
    got = keras.ops.convert_to_numpy(layer(x, training=False))
    z = gamma * (_conv2d(x, kernel, 1, 0) - mean) / np.sqrt(var + 1e-5) + beta
    np.testing.assert_allclose(got, x * sigmoid(z), rtol=1e-4, atol=1e-5)


def test_spatial_sam_is_cbam_attention():
    x = RNG.normal(size=(1, 6, 6, 5)).astype("float32")
    layer = _roundtrip(layers.SpatialAttention("spatial", 3))
    layer.build(x.shape)
    kernel = RNG.normal(size=(3, 3, 2, 1))
    bias = np.array([0.3])
    layer.attention.conv.set_weights([kernel, bias])
    got = keras.ops.convert_to_numpy(layer(x))
    pooled = np.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1)
    np.testing.assert_allclose(got, x * sigmoid(_conv2d(pooled, kernel, 1, 1) + bias), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        layers.SpatialAttention("channel")


def test_weighted_residual_is_fast_normalised_fusion():
    xs = [RNG.normal(size=(2, 3, 3, 4)).astype("float32") for _ in range(3)]
    layer = _roundtrip(layers.WeightedResidual(epsilon=1e-4))
    layer.build([x.shape for x in xs])
    v = np.array([2.0, -1.0, 0.5])
    layer.fusion_weights.assign(v)
    w = np.maximum(v, 0)
    want = sum(wi * x.astype(np.float64) for wi, x in zip(w / (w.sum() + 1e-4), xs))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(xs)), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="list of >= 2"):
        layers.WeightedResidual().build((1, 3, 3, 4))


def test_dropblock_drops_blocks_only_while_training():
    x = np.ones((4, 32, 32, 8), "float32")
    layer = _roundtrip(layers.DropBlock(rate=0.2, block_size=5, seed=1))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    dropped = np.mean(y == 0)
    assert 0.1 < dropped < 0.3
    kept = y[y != 0]
    np.testing.assert_allclose(kept, kept[0])           # kept values share one rescale factor
    assert kept[0] > 1.0
    with pytest.raises(ValueError, match="rate"):
        layers.DropBlock(rate=1.0)


def test_channel_group_and_anchor_split():
    x = RNG.normal(size=(1, 2, 2, 8)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layers.ChannelGroup(2, 1)(x)), x[..., 4:])
    y = RNG.normal(size=(1, 2, 3, 3 * 7)).astype("float16")
    split = _roundtrip(layers.AnchorSplit(3))
    got = split(y)
    assert keras.ops.convert_to_numpy(got).dtype == np.float32
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), y.astype("float32").reshape(1, 2, 3, 3, 7))
    with pytest.raises(ValueError, match="group_id"):
        layers.ChannelGroup(2, 2)
    with pytest.raises(ValueError, match="num_anchors"):
        layers.AnchorSplit(0)


def test_c3_csp_and_residual_blocks_have_the_reference_widths():
    inputs = keras.Input((8, 8, 64))
    c3 = keras.Model(inputs, layers.apply_c3(inputs, 64, 2, name="c3"))
    conv = lambda cin, cout, k: cin * cout * k * k + 4 * cout  # noqa: E731 - conv + BN
    # ultralytics C3(64, 64, n=2): cv1, cv2 1x1 64->32; 2 x Bottleneck(32, 32, e=1): 1x1, 3x3; cv3 1x1 64->64
    assert c3.count_params() == 2 * conv(64, 32, 1) + 2 * (conv(32, 32, 1) + conv(32, 32, 3)) + conv(64, 64, 1)
    csp = keras.Model(inputs, layers.apply_csp_stage(inputs, 128, 2, name="csp"))
    # yolov4.cfg stage 2: down 3x3 64->128 s2; skip, main 1x1 128->64; 2 x (1x1 64->64, 3x3 64->64);
    # transition 1x1 64->64; out 1x1 128->128
    assert csp.count_params() == (conv(64, 128, 3) + 2 * conv(128, 64, 1) + 2 * (conv(64, 64, 1) + conv(64, 64, 3))
                                  + conv(64, 64, 1) + conv(128, 128, 1))
    assert csp.output_shape == (None, 4, 4, 128)
    dark = keras.Model(inputs, layers.apply_darknet_stage(inputs, 128, 1, name="dark"))
    assert dark.count_params() == conv(64, 128, 3) + conv(128, 64, 1) + conv(64, 128, 3)


def test_residual_sum_is_dropped_without_shortcut():
    inputs = keras.Input((4, 4, 8))
    with_sum = keras.Model(inputs, layers.apply_bottleneck(inputs, 8, 8, shortcut=True, name="a"))
    without = keras.Model(inputs, layers.apply_bottleneck(inputs, 8, 8, shortcut=False, name="b"))
    without.set_weights(with_sum.get_weights())
    x = RNG.normal(size=(1, 4, 4, 8)).astype("float32")
    np.testing.assert_allclose(with_sum(x).numpy() - without(x).numpy(), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: layers.ConvBNAct(8, 3, strides=2, activation="mish"),
    lambda: layers.Reorg(2, darknet_order=True),
    lambda: layers.SpatialPyramidPooling(),
    lambda: layers.SequentialMaxPool(5),
    lambda: layers.SpatialAttention("pointwise"),
    lambda: layers.DropBlock(0.1, 3, seed=0),
], ids=["conv_bn_act", "reorg", "spp", "sppf_pool", "sam", "dropblock"])
def test_blocks_run_under_xla_and_round_trip(make):
    layer = make()
    x = tf.constant(RNG.normal(size=(2, 8, 8, 8)).astype("float32"))
    eager = keras.ops.convert_to_numpy(layer(x, training=False) if "training" in layer.call.__code__.co_varnames
                                       else layer(x))
    compiled = tf.function(lambda t: layer(t), jit_compile=True)
    np.testing.assert_allclose(compiled(x).numpy(), eager, rtol=1e-5, atol=1e-5)
    clone = _roundtrip(layer)
    assert clone.compute_output_shape((2, 8, 8, 8)) == layer.compute_output_shape((2, 8, 8, 8))


def test_pan_aggregates_top_down_then_bottom_up():
    inputs = [keras.Input((16, 16, 8)), keras.Input((8, 8, 16)), keras.Input((4, 4, 32))]

    def block(x, filters, name):
        return layers.ConvBNAct(filters, 1, name=f"{name}_cv")(x)

    outputs = layers.apply_pan(inputs, (8, 16, 32), block, name="pan")
    model = keras.Model(inputs, outputs)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 16, 16, 8), (None, 8, 8, 16), (None, 4, 4, 32)]
    conv = lambda cin, cout, k: cin * cout * k * k + 4 * cout  # noqa: E731 - conv + BN
    top_down = (conv(32, 16, 1) + conv(16, 16, 1) + conv(32, 16, 1)      # reduce T2, lateral C1, block
                + conv(16, 8, 1) + conv(8, 8, 1) + conv(16, 8, 1))       # reduce T1, lateral C0, block
    bottom_up = (conv(8, 16, 3) + conv(32, 16, 1)                        # down N0, block(concat(down, T1))
                 + conv(16, 32, 3) + conv(64, 32, 1))                    # down N1, block(concat(down, T2))
    assert model.count_params() == top_down + bottom_up
    # the deepest level reaches N2 only through the path; the finest reaches N2 through two downsamplings
    assert model.get_layer("pan_bu32_concat").input[1] is model.inputs[2]
    with pytest.raises(ValueError, match="same length"):
        layers.apply_pan(inputs[:2], (8, 16, 32), block)
