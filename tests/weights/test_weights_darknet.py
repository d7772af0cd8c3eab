"""darknet .cfg/.weights import: same outputs as libdarknet on the same input.

The reference is pjreddie darknet itself (Debian's libdarknet, through
tests/darknet/predict_harness.c): it builds each network from the cfg, fills
it with random weights and writes them with its own `save_weights`, then runs
`network_predict`. `load_darknet` must read the same files into a Keras model
whose raw outputs equal the inputs of darknet's head layers, and whose decoded
boxes equal darknet's `get_network_boxes`.

Tolerance: float32 sums in a different order (darknet's gemm vs oneDNN);
`|keras - darknet| <= 1e-4 * max(1, max |darknet|)`.
"""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import require_file, require_peer
from darknet_reorg_reference import reorg_cpu
from keras_yolo import versions
from keras_yolo.weights import darknet as darknet_import
from keras_yolo.weights import darknet_layers as dl
from keras_yolo.weights import load_darknet, make_decoder, parse_cfg

pytestmark = pytest.mark.parity

CFG_DIR = "/usr/share/darknet/cfg"
TOLERANCE = 1e-4
BATCH = 2

# Debian's shipped cfgs at a small input size (their [net] width/height
# rewritten). The full yolov2 / yolov3 (200+ MB of random weights each, 10 to
# 30 s) are marked slow; the zoo cfg below covers their layer types fast.
SHIPPED = {
    "yolov1-tiny": (128, 128),
    "yolov2-tiny": (128, 96),
    "yolov3-tiny": (128, 96),
    "yolov2": (128, 96),
    "yolov3": (96, 64),
    "yolov3-spp": (96, 64),
}
SLOW = {"yolov2", "yolov3", "yolov3-spp"}


def _resized_cfg(name, width, height, directory):
    text = open(require_file(os.path.join(CFG_DIR, f"{name}.cfg"), "(apt-get install darknet)")).read()
    for key, value in (("width", width), ("height", height), ("batch", 1), ("subdivisions", 1)):
        text = re.sub(rf"(?m)^{key}\s*=.*$", f"{key}={value}", text)
    path = os.path.join(directory, f"{name}.cfg")
    with open(path, "w") as f:
        f.write(text)
    return path


def _images(model, seed=0):
    height, width, channels = model.input_shape[1:]
    return np.random.default_rng(seed).uniform(0, 1, (BATCH, height, width, channels)).astype("float32")


def _max_error(actual, expected):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max()), float(max(1.0, np.abs(expected).max()))


def _assert_close(actual, expected, what):
    error, scale = _max_error(actual, expected)
    assert error <= TOLERANCE * scale, f"{what}: max |keras - darknet| = {error:.3g} (scale {scale:.3g})"


def _darknet_v1_layout(flat, side, num, classes):
    """darknet's [detection] input, per cell i = row * S + col: C scores of all
    cells, then Bx confidences, then Bx * 4 coordinates; to (N, S, S, Bx*5 + C)."""
    flat = flat.reshape(len(flat), -1)
    cells = side * side
    scores = flat[:, :cells * classes].reshape(-1, side, side, classes)
    conf = flat[:, cells * classes:cells * (classes + num)].reshape(-1, side, side, num, 1)
    coords = flat[:, cells * (classes + num):].reshape(-1, side, side, num, 4)
    boxes = np.concatenate([coords, conf], -1).reshape(-1, side, side, num * 5)
    return np.concatenate([boxes, scores], -1)


@pytest.fixture(scope="module")
def reference():
    return require_peer("darknet_predict_reference", "(libdarknet parity harness)")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("darknet"))


@pytest.fixture(scope="module")
def shipped(reference, workdir):
    """`shipped(name)`: (cfg, weights, model) of a resized shipped cfg, made once."""
    cache = {}

    def get(name):
        if name not in cache:
            cfg = _resized_cfg(name, *SHIPPED[name], workdir)
            cache[name] = (cfg, *_convert(reference, cfg, 1, workdir))
        return cache[name]
    return get


def _convert(reference, cfg, seed, workdir):
    weights = reference.random_weights(cfg, seed, os.path.join(workdir, os.path.basename(cfg) + ".weights"))
    return weights, load_darknet(cfg, weights)


def _raw_outputs(model, images):
    outputs = model(images)
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def _check_raw(reference, model, cfg, weights, images):
    """Keras raw outputs vs the inputs of darknet's head layers; returns errors."""
    heads = reference.predict(cfg, weights, images, mode="heads")
    config = model.decode_config
    outputs = _raw_outputs(model, images)
    errors = []
    if config["version"] == "v1":
        expected = [_darknet_v1_layout(heads[0]["output"], config["grid_size"],
                                       config["boxes_per_cell"], config["num_classes"])]
    else:
        # darknet's (H, W, A*(5+C)) channel blocks are per anchor.
        order = config.get("darknet_order", [0])
        expected = [heads[i]["output"].reshape(o.shape) for i, o in zip(order, outputs)]
    assert len(outputs) == len(expected) == len(heads)
    for level, (actual, wanted) in enumerate(zip(outputs, expected)):
        _assert_close(actual, wanted, f"{model.name} level {level}")
        errors.append(_max_error(actual, wanted)[0])
    return errors


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in SHIPPED])
def test_shipped_cfg_raw_outputs_match_darknet(reference, shipped, name):
    cfg, weights, model = shipped(name)
    assert model.darknet_header["major"] == 0 and model.darknet_header["minor"] == 2
    _check_raw(reference, model, cfg, weights, _images(model))


def _darknet_boxes_in_keras_order(config, boxes):
    """darknet lists [yolo] boxes level by level in cfg order (cell, then
    anchor) and [region] boxes anchor-major; keras-yolo: ascending stride, row,
    column, anchor."""
    if config["version"] == "v2":
        height = config["input_shape"][0] // int(config["strides"][0])
        width = config["input_shape"][1] // int(config["strides"][0])
        anchors = len(config["anchors"][0])
        return boxes.reshape(len(boxes), anchors, height * width, -1).transpose(0, 2, 1, 3).reshape(
            boxes.shape)
    if config["version"] in ("v3", "v4"):
        sizes = [(config["input_shape"][0] // int(s)) * (config["input_shape"][1] // int(s)) * len(a)
                 for s, a in zip(config["strides"], config["anchors"])]
        cfg_order_sizes = [sizes[config["darknet_order"].index(i)] for i in range(len(sizes))]
        blocks = np.split(boxes, np.cumsum(cfg_order_sizes)[:-1], axis=1)
        return np.concatenate([blocks[i] for i in config["darknet_order"]], axis=1)
    return boxes


@pytest.mark.parametrize("name", ["yolov1-tiny", "yolov2-tiny", "yolov3-tiny"])
def test_decoded_boxes_match_darknet_get_network_boxes(reference, shipped, name):
    cfg, weights, model = shipped(name)
    images = _images(model, seed=1)
    expected = reference.predict(cfg, weights, images, mode="boxes")[0]["output"]
    expected = _darknet_boxes_in_keras_order(model.decode_config, expected)
    if model.decode_config["version"] == "v1":
        # get_detection_detections scales boxes by the w, h it is given (pixels).
        height, width = model.decode_config["input_shape"][:2]
        expected[..., :4] /= [width, height, width, height]
    decoded = make_decoder(model.decode_config, "rel_center_xywh")(model(images))
    _assert_close(decoded["boxes"], expected[..., :4], f"{name} boxes")
    _assert_close(decoded["objectness"], expected[..., 4], f"{name} objectness")
    scores = np.asarray(decoded["objectness"])[..., None] * np.asarray(decoded["class_probs"])
    scores = np.where(scores > 0, scores, 0)  # darknet keeps prob only when > thresh (0)
    _assert_close(scores, expected[..., 5:], f"{name} scores")


# Every pjreddie layer option the shipped cfgs leave out: maxpool with default
# and explicit padding on odd sizes, grouped convolution, shortcut alpha/beta,
# upsample scale, a two-source route, the 2018 reorg, local, and activations.
LAYER_ZOO_CFG = """
[net]
batch=1
subdivisions=1
width=72
height=40
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=3
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
groups=4
activation=relu

[shortcut]
from=-2
alpha=0.5
beta=2
activation=leaky

[convolutional]
filters=32
size=3
stride=2
pad=1
activation=elu

[maxpool]
size=2
stride=1

[upsample]
stride=2
scale=0.5

[route]
layers=-1,3

[reorg]
stride=2

[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
activation=tanh

[local]
filters=6
size=3
stride=1
pad=1
activation=logistic

[maxpool]
size=2
stride=2
padding=0

[maxpool]
size=3
stride=2
padding=1

[convolutional]
filters=21
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,13, 16,30, 33,23
classes=2
num=3
"""

# YOLOv1-style: strided conv, avgpool-free dense tail with batch norm and dropout.
DENSE_CFG = """
[net]
batch=1
subdivisions=1
width=48
height=48
channels=3

[convolutional]
batch_normalize=1
filters=8
size=5
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[connected]
batch_normalize=1
output=64
activation=leaky

[dropout]
probability=.5

[connected]
output=52
activation=linear

[detection]
classes=3
coords=4
rescore=1
side=2
num=2
softmax=1
sqrt=1
"""


def _write(text, name, directory):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.fixture(scope="module")
def zoo(reference, workdir):
    cfg = _write(LAYER_ZOO_CFG, "zoo.cfg", workdir)
    weights, model = _convert(reference, cfg, 3, workdir)
    return cfg, weights, model


def test_layer_zoo_matches_darknet(reference, zoo):
    cfg, weights, model = zoo
    _check_raw(reference, model, cfg, weights, _images(model))


def test_connected_batchnorm_dropout_detection_match_darknet(reference, workdir):
    cfg = _write(DENSE_CFG, "dense.cfg", workdir)
    weights, model = _convert(reference, cfg, 4, workdir)
    assert model.decode_config["softmax"] and model.decode_config["sqrt"]
    _check_raw(reference, model, cfg, weights, _images(model))


def test_32_bit_seen_header_reads_like_darknet(reference, zoo, workdir):
    """Files of weights format < 0.2 store `seen` as int32, 4 bytes fewer."""
    cfg, weights, _ = zoo
    data = np.fromfile(weights, np.uint8)
    old = os.path.join(workdir, "zoo_v01.weights")
    with open(old, "wb") as f:
        np.array([0, 1, 0, 12345], "<i4").tofile(f)
        data[20:].tofile(f)
    model = load_darknet(cfg, old)
    assert model.darknet_header == {"major": 0, "minor": 1, "revision": 0, "seen": 12345}
    _check_raw(reference, model, cfg, old, _images(model))


def test_transposed_connected_weights_read_like_darknet(reference, workdir):
    """major or minor > 1000: [connected] weights stored (inputs, outputs)."""
    cfg = _write(DENSE_CFG, "dense_t.cfg", workdir)
    weights, _ = _convert(reference, cfg, 5, workdir)
    values = np.fromfile(weights, "<f4", offset=20).copy()
    # layout of DENSE_CFG: conv 8 filters 5x5x3 with BN (8 + 3*8 + 600 floats), then
    # connected 1152 -> 64 (+ BN), then connected 64 -> 52
    start = 632 + 64
    for inputs, outputs, after in ((1152, 64, 3 * 64 + 52), (64, 52, 0)):
        block = values[start:start + inputs * outputs].reshape(outputs, inputs)
        values[start:start + inputs * outputs] = block.T.reshape(-1)
        start += inputs * outputs + after
    transposed = os.path.join(workdir, "dense_t.weights")
    with open(transposed, "wb") as f:
        np.array([0, 1001, 0, 7], "<i4").tofile(f)  # minor > 1000: int32 seen, transposed
        values.tofile(f)
    model = load_darknet(cfg, transposed)
    _check_raw(reference, model, cfg, transposed, _images(model))


def test_weights_of_another_cfg_are_rejected(reference, zoo, workdir):
    cfg, weights, _ = zoo
    data = np.fromfile(weights, np.uint8)
    short = _write("", "short.weights", workdir)
    data[:-8].tofile(short)
    with pytest.raises(ValueError, match="more weights than the file"):
        load_darknet(cfg, short)
    long = _write("", "long.weights", workdir)
    np.concatenate([data, np.zeros(8, np.uint8)]).tofile(long)
    with pytest.raises(ValueError, match="2 floats left"):
        load_darknet(cfg, long)


def test_converted_model_saves_loads_and_compiles(zoo, tmp_path):
    cfg, weights, model = zoo
    images = _images(model)
    expected = np.asarray(model(images)[0])
    path = str(tmp_path / "zoo.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(restored(images)[0]), expected)
    compiled = tf.function(lambda x: model(x)[0], jit_compile=True)
    np.testing.assert_allclose(np.asarray(compiled(images)), expected, atol=1e-5)


# --------------------------------------------------------------- layer units

def test_reorg_darknet2018_is_reorg_cpu_of_the_input_dims():
    """pjreddie forward_reorg_layer: reorg_cpu(input, l.w, l.h, l.c, ..., 0)."""
    batch, h, w, c, s = 2, 4, 6, 8, 2
    x = np.arange(batch * h * w * c, dtype=np.float32).reshape(batch, h, w, c)
    flat = reorg_cpu(x.transpose(0, 3, 1, 2).reshape(-1), w, h, c, batch, s, forward=0)
    expected = flat.reshape(batch, c * s * s, h // s, w // s).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(dl.DarknetReorg(s, "darknet2018")(x)), expected)
    assert not np.array_equal(expected, tf.nn.space_to_depth(x, s).numpy())


def test_reorg_space_to_depth_is_alexeyab_order():
    """AlexeyAB forward_reorg_layer: reorg_cpu(input, out_w, out_h, out_c, ..., 0)."""
    batch, h, w, c, s = 2, 4, 6, 8, 2
    x = np.arange(batch * h * w * c, dtype=np.float32).reshape(batch, h, w, c)
    flat = reorg_cpu(x.transpose(0, 3, 1, 2).reshape(-1), w // s, h // s, c * s * s, batch, s,
                      forward=0)
    expected = flat.reshape(batch, c * s * s, h // s, w // s).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(dl.DarknetReorg(s, "space_to_depth")(x)), expected)
    np.testing.assert_array_equal(expected, tf.nn.space_to_depth(x, s).numpy())


@pytest.mark.parametrize("size, stride, padding, height", [
    (2, 2, 1, 13), (2, 1, 1, 13), (3, 2, 2, 12), (5, 1, 4, 7), (3, 2, 0, 9), (2, 2, 3, 6)])
def test_maxpool_follows_forward_maxpool_layer(size, stride, padding, height):
    """darknet maxpool_layer.c: out = (h + padding - size) / stride + 1, window
    at (i * stride - padding / 2), cells outside the input skipped, max
    starting at -FLT_MAX (a window wholly outside gives -FLT_MAX)."""
    x = np.random.default_rng(0).normal(size=(1, height, height + 1, 3)).astype(np.float32)
    out_h = (height + padding - size) // stride + 1
    out_w = (height + 1 + padding - size) // stride + 1
    expected = np.full((1, out_h, out_w, 3), -np.finfo(np.float32).max, np.float32)  # -FLT_MAX
    for i in range(out_h):
        for j in range(out_w):
            for n in range(size):
                for m in range(size):
                    row, col = i * stride + n - padding // 2, j * stride + m - padding // 2
                    if 0 <= row < height and 0 <= col < height + 1:
                        expected[0, i, j] = np.maximum(expected[0, i, j], x[0, row, col])
    np.testing.assert_array_equal(np.asarray(dl.DarknetMaxPool2D(size, stride, padding)(x)), expected)


def test_activations_follow_darknet_formulas():
    x = np.linspace(-30, 30, 601).astype(np.float32)
    x64 = x.astype(np.float64)
    softplus = np.where(x64 > 20, x64, np.log1p(np.exp(x64)))
    formulas = {
        "leaky": np.where(x64 > 0, x64, 0.1 * x64),
        "logistic": 1 / (1 + np.exp(-x64)),
        "mish": x64 * np.tanh(softplus),
        "swish": x64 / (1 + np.exp(-x64)),
        "elu": np.where(x64 >= 0, x64, np.exp(x64) - 1),
        "relu": np.maximum(x64, 0),
        "tanh": np.tanh(x64),
    }
    for name, expected in formulas.items():
        np.testing.assert_allclose(np.asarray(dl.DarknetActivation(name)(x)), expected,
                                   rtol=1e-6, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="activation='selu'"):
        dl.DarknetActivation("selu")


def test_darknet_layers_round_trip_through_config():
    for layer in (dl.DarknetMaxPool2D(3, 2, 1), dl.DarknetReorg(2, "space_to_depth"),
                  dl.DarknetLocal(4, 3, 1, 1), dl.DarknetDetectionLayout(7, 2, 20),
                  dl.DarknetActivation("mish"), dl.DarknetChannelGroup(2, 1), dl.DarknetFlatten()):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


# AlexeyAB-only features (libdarknet 2018 cannot run them): mish, swish,
# [route] groups, scale_x_y; a yolov4-tiny-shaped network.
ALEXEYAB_CFG = """
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=mish

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=swish

[route]
layers=-1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[route]
layers=-1,-2

[maxpool]
size=2
stride=2

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask=3,4,5
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=1
num=6
scale_x_y=1.05
"""


def test_alexeyab_features_and_decode_config(tmp_path):
    cfg = _write(ALEXEYAB_CFG, "v4.cfg", str(tmp_path))
    model = load_darknet(cfg, None)
    config = model.decode_config
    assert config["flavor"] == "alexeyab" and config["version"] == "v4"
    assert config["anchors"] == [[[81.0, 82.0], [135.0, 169.0], [344.0, 319.0]]]
    assert config["scale_x_y"] == [1.05] and config["strides"] == [4.0]
    assert model.get_layer("bn_0").epsilon == darknet_import.ALEXEYAB_EPSILON
    images = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype("float32")
    probe = keras.Model(model.input, [model.get_layer("swish_1").output,
                                       model.get_layer("route_2_group_0").output,
                                       model.get_layer("route_4").output,
                                       model.get_layer("leaky_3").output])
    swish, group, route, conv = (np.asarray(t) for t in probe(images))
    np.testing.assert_array_equal(group, swish[..., 8:])
    np.testing.assert_array_equal(route, np.concatenate([conv, group], -1))
    decoder = make_decoder(config, "xyxy")
    assert decoder.scale_x_y == [1.05] or tuple(decoder.scale_x_y) == (1.05,)


def test_pjreddie_batch_norm_is_sqrt_var_plus_1e6(zoo):
    """(x - mean) / (sqrt(var) + 1e-6) through Keras' (x - mean) / sqrt(var' + eps)."""
    _, _, model = zoo
    bn = model.get_layer("bn_0")
    _, _, mean, variance = (np.asarray(v, np.float64) for v in bn.get_weights())
    x = np.random.default_rng(0).normal(size=(1, 1, 1, 16)).astype(np.float32)
    gamma, beta = (np.asarray(v, np.float64) for v in bn.get_weights()[:2])
    # recover darknet's var from var' and check the formula on a fresh input
    darknet_var = (np.sqrt(variance + bn.epsilon) - darknet_import.PJREDDIE_SQRT_OFFSET) ** 2
    expected = gamma * (x - mean) / (np.sqrt(darknet_var) + 1e-6) + beta
    np.testing.assert_allclose(np.asarray(bn(x)), expected, rtol=1e-5, atol=1e-6)


def test_bad_input_is_named(tmp_path):
    cfg = _write("[net]\nwidth=32\nheight=32\n[softmax]\n", "bad.cfg", str(tmp_path))
    with pytest.raises(NotImplementedError, match=r"\[softmax\]"):
        load_darknet(cfg)
    with pytest.raises(ValueError, match="flavor"):
        load_darknet(cfg, flavor="darknet")
    with pytest.raises(ValueError, match=r"first section must be \[net\]"):
        parse_cfg(_write("[convolutional]\n", "nonet.cfg", str(tmp_path)))


def test_convert_command_writes_keras_and_decode_config(zoo, tmp_path, capsys):
    """`python -m serving convert --from darknet ...` in one call."""
    import json

    from serving.__main__ import main

    cfg, weights, model = zoo
    out = str(tmp_path / "zoo.keras")
    assert main(["convert", "--from", "darknet", "--cfg", cfg, "--weights", weights, "--out", out]) == 0
    assert "max |difference| 0" in capsys.readouterr().out
    images = _images(model)
    restored = keras.saving.load_model(out)
    np.testing.assert_array_equal(np.asarray(restored(images)[0]), np.asarray(model(images)[0]))
    with open(str(tmp_path / "zoo.decode.json")) as f:
        saved = json.load(f)
    # decode.json is the decode layer's own config; the cfg's description rides along.
    assert saved["importer"] == json.loads(json.dumps(model.decode_config))
    decoder = make_decoder(model.decode_config, "xyxy")
    assert saved["layer"] == type(decoder).__name__
    assert {k: saved[k] for k in decoder.get_config() if k != "name"} == json.loads(json.dumps(
        {k: v for k, v in decoder.get_config().items() if k != "name"} | {"bounding_box_format": "rel_center_xywh"}))
    levels = lambda raw: raw if isinstance(raw, (list, tuple)) else [raw]  # noqa: E731 - one [yolo] level
    expected = decoder(levels(model(images)))
    actual = versions.decode_layer(saved, "xyxy")(levels(restored(images)))
    for key in ("boxes", "objectness", "class_probs"):
        np.testing.assert_array_equal(np.asarray(actual[key]), np.asarray(expected[key]))
    assert main(["convert", "--from", "darknet", "--cfg", cfg, "--out", out]) == 2
    assert "--weights" in capsys.readouterr().err


# Scaled-YOLOv4's head: the conv applies the logistic, [yolo] new_coords=1 only
# scales x, y. pjreddie darknet ignores new_coords / scale_x_y, so its [yolo]
# input is exactly logistic(conv): the activated values AlexeyAB decodes.
NEW_COORDS_CFG = """
[net]
batch=1
subdivisions=1
width=64
height=96
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=logistic

[yolo]
mask=0,1,2
anchors=12,16, 19,36, 40,28
classes=2
num=3
new_coords=1
scale_x_y=2.0
"""


def test_new_coords_head_matches_alexeyab_get_yolo_box(reference, workdir):
    cfg = _write(NEW_COORDS_CFG, "new_coords.cfg", workdir)
    weights = reference.random_weights(cfg, 6, os.path.join(workdir, "new_coords.weights"))
    model = load_darknet(cfg, weights, flavor="pjreddie")  # the binary is pjreddie's
    config = model.decode_config
    assert config["version"] == "v5" and config["scale_x_y"] == [2.0]
    images = _images(model)
    activated = reference.predict(cfg, weights, images, mode="heads")[0]["output"]
    raw = np.asarray(model(images))
    activated = activated.reshape(raw.shape).astype(np.float64)
    _assert_close(1 / (1 + np.exp(-raw.astype(np.float64))), activated, "logistic(raw)")
    # AlexeyAB yolo_layer.c: x' = scale_x_y x - (scale_x_y - 1) / 2 on x, y, then
    # get_yolo_box(new_coords): b_x = (i + x') / lw, b_w = 4 x_w^2 anchor_w / net_w
    batch, lh, lw, anchors, _ = raw.shape
    net_h, net_w = config["input_shape"][:2]
    cols = np.arange(lw)[None, None, :, None]
    rows = np.arange(lh)[None, :, None, None]
    xy = 2.0 * activated[..., :2] - 0.5
    anchor = np.asarray(config["anchors"][0])
    expected = np.stack([(cols + xy[..., 0]) / lw, (rows + xy[..., 1]) / lh,
                         4 * activated[..., 2] ** 2 * anchor[:, 0] / net_w,
                         4 * activated[..., 3] ** 2 * anchor[:, 1] / net_h], -1)
    decoded = make_decoder(config, "rel_center_xywh")(model(images))
    _assert_close(decoded["boxes"], expected.reshape(batch, -1, 4), "new_coords boxes")
    _assert_close(decoded["objectness"], activated[..., 4].reshape(batch, -1), "objectness")
    _assert_close(decoded["class_probs"], activated[..., 5:].reshape(batch, -1, 2), "class probs")
