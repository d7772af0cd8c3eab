"""The networks of every version: parameter counts against the references, shapes, FLOPs, training.

Reference parameter counts, 80 classes:
* darknet models: the number of float32 values darknet's `save_weights` writes for
  the cfg (biases, BN scales, rolling means and variances, weights), measured with
  Debian's libdarknet (pjreddie) on cfg/yolov1-tiny.cfg, yolov2.cfg, yolov2-tiny.cfg,
  yolov3.cfg, yolov3-spp.cfg, yolov3-tiny.cfg and, for the cfgs libdarknet cannot
  parse (mish, grouped routes), counted from AlexeyAB's cfg/yolov4.cfg and
  cfg/yolov4-tiny.cfg (equal to their published .weights sizes: (257717640 - 20) / 4
  and (24251276 - 20) / 4). yolov1 is cfg/yolov1.cfg with the paper's head (the
  `[local]` layer replaced by `[connected] output=4096`, 2 boxes) and yolov1-tiny
  cfg/yolov1-tiny.cfg, both with 80 classes (darknet's are VOC's 20). This equals
  Keras' `count_params()` (BN moving statistics included).
* yolov5: `sum(p.numel() for p in model.parameters())` of ultralytics' models
  (yolov5{n,s,m,l,x}.yaml, v6.0+, printed by its model summary), which excludes BN
  running statistics: Keras' trainable parameter count.
"""

import os

import numpy as np
import pytest
import keras
import tensorflow as tf

from keras_yolo import models
from keras_yolo.layers import ConvBNAct
from conftest import require_file, require_peer

DARKNET_PARAMETERS = {
    "yolov1": 283_788_282,
    "yolov1-tiny": 63_982_250,
    "yolov2": 50_983_561,
    "yolov2-tiny": 11_237_145,
    "yolov3": 62_001_757,
    "yolov3-spp": 63_052_381,
    "yolov3-tiny": 8_858_734,
    "yolov4": 64_429_405,
    "yolov4-tiny": 6_062_814,
}
ULTRALYTICS_PARAMETERS = {
    "yolov5n": 1_872_157,
    "yolov5s": 7_235_389,
    "yolov5m": 21_190_557,
    "yolov5l": 46_563_709,
    "yolov5x": 86_749_405,
}
# ultralytics' README table, GFLOPs at 640 (rounded to 0.1).
YOLOV5_PUBLISHED_GFLOPS = {"yolov5n": 4.5, "yolov5s": 16.5, "yolov5m": 49.0, "yolov5l": 109.1, "yolov5x": 205.7}
# 2 x multiply-accumulates of the cfg's [convolutional] / [connected] layers, computed from the cfgs
# at the default size; libdarknet prints the same per layer ("BFLOPs"; yolov3 at 416 sums to 65.862).
DARKNET_FLOPS = {
    "yolov1": 40_594_391_040,
    "yolov1-tiny": 3_289_789_440,
    "yolov2": 29_464_168_448,
    "yolov2-tiny": 5_406_442_496,
    "yolov3": 65_864_075_264,
    "yolov3-spp": 141_448_972_288,
    "yolov3-tiny": 5_564_961_792,
    "yolov4": 128_389_482_496,
    "yolov4-tiny": 6_907_876_352,
}
LEVEL_STRIDES = {"yolov2": (32,), "yolov2-tiny": (32,), "yolov3": (8, 16, 32), "yolov3-spp": (8, 16, 32),
                 "yolov3-tiny": (16, 32), "yolov4": (8, 16, 32), "yolov4-tiny": (16, 32),
                 **{name: (8, 16, 32) for name in ULTRALYTICS_PARAMETERS}}
ANCHORS = {"yolov2": 5, "yolov2-tiny": 5}


@pytest.fixture(scope="module")
def shape_models():
    """Every model at 80 classes, without weight values (counts and shapes only): v1 at 448, others any size."""
    built = {}
    with models.shapes_only():
        for name in models.available_models():
            shape = (448, 448, 3) if name.startswith("yolov1") else (None, None, 3)
            built[name] = models.build(name, num_classes=80, input_shape=shape)
    return built


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_every_named_model_is_registered():
    # yolov8n..x: their counts are tested in tests/models/test_yolov8.py.
    from keras_yolo.models.yolov8 import YOLOV8_SCALES

    assert set(models.available_models()) == (set(DARKNET_PARAMETERS) | set(ULTRALYTICS_PARAMETERS)
                                             | {f"yolov8{size}" for size in YOLOV8_SCALES})


@pytest.mark.parametrize("name", sorted(DARKNET_PARAMETERS))
def test_darknet_models_have_the_cfgs_parameter_count(shape_models, name):
    assert shape_models[name].count_params() == DARKNET_PARAMETERS[name]


@pytest.mark.parametrize("name", sorted(ULTRALYTICS_PARAMETERS))
def test_yolov5_models_have_ultralytics_parameter_count(shape_models, name):
    model = shape_models[name]
    assert _trainable(model) == ULTRALYTICS_PARAMETERS[name]
    bn_statistics = sum(2 * layer.bn.gamma.shape[0] for layer in model.layers if isinstance(layer, ConvBNAct))
    assert model.count_params() == ULTRALYTICS_PARAMETERS[name] + bn_statistics


@pytest.mark.parametrize("name", sorted(LEVEL_STRIDES))
@pytest.mark.parametrize("height, width", [(320, 320), (256, 416), (64, 96)])
def test_outputs_are_levels_in_ascending_stride(shape_models, name, height, width):
    outputs = shape_models[name](keras.KerasTensor((2, height, width, 3)))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    assert [tuple(o.shape) for o in outputs] == [
        (2, height // s, width // s, ANCHORS.get(name, 3), 85) for s in LEVEL_STRIDES[name]]


@pytest.mark.parametrize("name", sorted(LEVEL_STRIDES))
def test_model_spec_anchors_fit_the_outputs(shape_models, name):
    spec = models.model_spec(name)
    assert tuple(spec["strides"]) == LEVEL_STRIDES[name]
    outputs = shape_models[name].outputs
    assert [len(level) for level in spec["anchors"]] == [o.shape[3] for o in outputs]
    assert spec["input_shape"][0] % max(spec["strides"]) == 0


def test_yolov1_output_is_s_by_s_by_boxes_times_5_plus_classes(shape_models):
    assert shape_models["yolov1"].output_shape == (None, 7, 7, 2 * 5 + 80)
    assert shape_models["yolov1-tiny"].output_shape == (None, 7, 7, 2 * 5 + 80)
    with models.shapes_only():
        voc = models.build("yolov1", num_classes=20, input_shape=(448, 448, 3), boxes_per_cell=3)
    assert voc.output_shape == (None, 7, 7, 3 * 5 + 20)
    # the paper's head: 7 x 7 x 1024 -> 4096 -> 7 x 7 x 30 dense layers
    assert voc.get_layer("fc1").kernel.shape == (7 * 7 * 1024, 4096)
    assert sum(isinstance(layer, ConvBNAct) for layer in voc.layers) == 24


@pytest.mark.parametrize("name", sorted(YOLOV5_PUBLISHED_GFLOPS))
def test_yolov5_flops_at_640_match_the_published_gflops(shape_models, name):
    gflops = models.flops(shape_models[name], (640, 640, 3)) / 1e9
    assert abs(gflops - YOLOV5_PUBLISHED_GFLOPS[name]) / YOLOV5_PUBLISHED_GFLOPS[name] < 0.01


@pytest.mark.parametrize("name", sorted(DARKNET_FLOPS))
def test_darknet_flops_equal_the_cfgs(shape_models, name):
    size = models.model_spec(name)["input_shape"]
    assert models.flops(shape_models[name], size) == DARKNET_FLOPS[name]


def test_flops_scale_with_the_image_area(shape_models):
    model = shape_models["yolov3-tiny"]
    assert models.flops(model, (832, 832, 3)) == 4 * models.flops(model, (416, 416, 3))
    with pytest.raises(ValueError, match="input_shape must be"):
        models.flops(shape_models["yolov1"], (512, 512, 3))


def test_darknet_layer_order_names_every_weighted_layer_once(shape_models):
    for name in DARKNET_PARAMETERS:
        model = shape_models[name]
        weighted = [layer.name for layer in model.layers
                    if isinstance(layer, (ConvBNAct, keras.layers.Conv2D, keras.layers.Dense))]
        assert sorted(models.darknet_layer_names(name)) == sorted(weighted), name


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="name must be one of"):
        models.build("yolov6")
    with pytest.raises(ValueError, match="multiples of 32"):
        models.build("yolov3-tiny", input_shape=(100, 100, 3))
    with pytest.raises(ValueError, match="multiples of 64"):
        models.build("yolov1-tiny", input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="num_classes"):
        models.build("yolov5n", num_classes=0)


@pytest.fixture(scope="module")
def yolov5n_small():
    keras.utils.set_random_seed(0)
    return models.build("yolov5n", num_classes=3, input_shape=(64, 64, 3))


def test_yolov5_head_biases_start_at_ultralytics_priors(yolov5n_small):
    for i, stride in enumerate((8, 16, 32)):
        bias = yolov5n_small.get_layer(f"m24_m{i}_conv").bias.numpy().reshape(3, 8)
        np.testing.assert_allclose(bias[:, 4], np.log(8 / (640 / stride) ** 2), rtol=1e-6)
        np.testing.assert_allclose(bias[:, 5:], np.log(0.6 / (3 - 0.99999)), rtol=1e-6)  # yolov5 7.0 yolo.py
        np.testing.assert_array_equal(bias[:, :4], 0)


def test_yolov4_bag_of_specials_options():
    with models.shapes_only():
        model = models.build("yolov4", input_shape=(None, None, 3), sam=True, dropblock_rate=0.1)
    # a point-wise SAM (1x1 conv C -> C with BN) before each head: 256, 512, 1024 channels
    sam = sum(c * c + 4 * c for c in (256, 512, 1024))
    assert model.count_params() == DARKNET_PARAMETERS["yolov4"] + sam
    assert sum("dropblock" in layer.name for layer in model.layers) == 3


def test_summary_names_the_blocks(shape_models):
    lines = []
    shape_models["yolov5s"].summary(print_fn=lines.append, line_length=120)
    text = "\n".join(lines)
    for name in ("m0 (ConvBNAct)", "m2_m0_cv1 (ConvBNAct)", "m9_pool (SequentialMaxPool)", "m24_m2 (AnchorSplit)"):
        assert name in text
    assert "Total params: 7,254,397" in text


def _tiny_batch(model_input, num_classes, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(batch,) + model_input).astype("float32")
    truth = {"boxes": rng.uniform(0.2, 0.6, size=(batch, 4, 4)).astype("float32"),
             "labels": rng.integers(-1, num_classes, size=(batch, 4)).astype("int32")}
    return images, truth


def _squared_output_loss(y_true, y_pred):
    """A stand-in objective reading the ground-truth dict and every level: mean square of the outputs
    plus the mean box coordinate (so y_true flows through the same call shape as the YOLO losses)."""
    levels = y_pred if isinstance(y_pred, (list, tuple)) else [y_pred]
    return sum(keras.ops.mean(keras.ops.square(p)) for p in levels) + 0.0 * keras.ops.mean(y_true["boxes"])


LEARNING_RATE = 1e-3


def _check_one_training_step(model, input_shape, num_classes, jit_compile=False):
    """One SGD step through `YoloModel.train_on_batch` moves every weight by -lr * dL/dw.

    The gradient is taken independently with a GradientTape on the same batch (BN in
    training mode is deterministic for one batch). Eager unless jit: tracing a whole
    detector's training graph costs tens of seconds on two cores.
    """
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss=_squared_output_loss,
                  run_eagerly=not jit_compile, jit_compile=jit_compile)
    images, truth = _tiny_batch(input_shape, num_classes)
    weights = model.trainable_weights
    before = [w.numpy().copy() for w in weights]
    with tf.GradientTape() as tape:
        loss = _squared_output_loss(truth, model(images, training=True))
    gradients = [g.numpy() for g in tape.gradient(loss, weights)]
    assert all(np.any(g != 0) for g in gradients)     # every weight gets a gradient
    for w, b in zip(weights, before):                  # the tape's forward updated no weights
        np.testing.assert_array_equal(w.numpy(), b)
    reported = model.train_on_batch(images, truth, return_dict=True)["loss"]
    stochastic = any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    if not stochastic:
        np.testing.assert_allclose(reported, loss.numpy(), rtol=1e-5)
    for w, b, g in zip(weights, before, gradients):
        if stochastic:
            assert not np.array_equal(w.numpy(), b)
        else:
            np.testing.assert_allclose(w.numpy(), b - LEARNING_RATE * g, rtol=1e-3,
                                       atol=1e-3 * LEARNING_RATE * np.abs(g).max() + 1e-7)


TRAIN_CASES = {"yolov1-tiny": (128, 128, 3), "yolov3-tiny": (64, 96, 3), "yolov4-tiny": (64, 64, 3)}


@pytest.mark.parametrize("name", sorted(TRAIN_CASES))
def test_one_training_step_moves_every_weight_down_its_gradient(name):
    keras.utils.set_random_seed(0)
    model = models.build(name, num_classes=2, input_shape=TRAIN_CASES[name])
    _check_one_training_step(model, TRAIN_CASES[name], 2)


@pytest.mark.slow
def test_one_xla_compiled_training_step():
    keras.utils.set_random_seed(0)
    model = models.build("yolov2-tiny", num_classes=2, input_shape=(64, 64, 3))
    _check_one_training_step(model, (64, 64, 3), 2, jit_compile=True)


def test_one_training_step_of_yolov5n(yolov5n_small):
    model = keras.models.clone_model(yolov5n_small)
    model.set_weights(yolov5n_small.get_weights())
    _check_one_training_step(model, (64, 64, 3), 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov1", "yolov2", "yolov3", "yolov3-spp", "yolov4", "yolov5s", "yolov5m",
                                  "yolov5l", "yolov5x"])
def test_one_training_step_of_the_full_size_models(name):
    keras.utils.set_random_seed(0)
    shape = (128, 128, 3) if name == "yolov1" else (64, 64, 3)
    _check_one_training_step(models.build(name, num_classes=2, input_shape=shape), shape, 2)


def test_save_and_load_keras_format_gives_identical_outputs(tmp_path):
    model = models.build("yolov3-tiny", num_classes=3, input_shape=(None, None, 3))
    images, _ = _tiny_batch((64, 96, 3), 3)
    path = os.path.join(tmp_path, "yolov3_tiny.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, models.YoloModel)
    for a, b in zip(model.predict(images, verbose=0), loaded.predict(images, verbose=0)):
        np.testing.assert_array_equal(a, b)


def test_jit_compiled_forward_equals_eager():
    model = models.build("yolov4-tiny", num_classes=3, input_shape=(64, 64, 3))
    images, _ = _tiny_batch((64, 64, 3), 3)
    eager = model(images, training=False)
    compiled = tf.function(lambda x: model(x, training=False), jit_compile=True)(tf.constant(images))
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_float32_close_to_float32(policy, yolov5n_small):
    images, _ = _tiny_batch((64, 64, 3), 3)
    reference = yolov5n_small
    keras.mixed_precision.set_global_policy(policy)
    try:
        mixed = models.build("yolov5n", num_classes=3, input_shape=(64, 64, 3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(reference.get_weights())
    assert mixed.get_layer("m2_cv1").conv.compute_dtype == policy.split("_")[1]
    tolerance = 0.05 if policy == "mixed_float16" else 0.15
    for a, b in zip(reference(images, training=False), mixed(images, training=False)):
        assert b.dtype == "float32"
        scale = np.abs(a.numpy()).max()
        assert np.abs(b.numpy() - a.numpy()).max() < tolerance * scale


# --- parity with darknet: the same random weights in libdarknet and in our model give the same heads.

LIBDARKNET = "/usr/lib/darknet/libdarknet.so"
DARKNET_CFG = "/usr/share/darknet/cfg"


def _darknet_predict(cfg_text, weights_path, image_chw):
    import ctypes  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    lib = ctypes.CDLL(require_file(LIBDARKNET, "(Debian package darknet)"))
    lib.load_network.restype = ctypes.c_void_p
    lib.load_network.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    lib.network_predict.restype = ctypes.POINTER(ctypes.c_float)
    lib.network_predict.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float)]
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as handle:
        handle.write(cfg_text)
    net = lib.load_network(handle.name.encode(), weights_path.encode(), 0)
    os.unlink(handle.name)
    buffer = np.ascontiguousarray(image_chw, dtype=np.float32)
    return lib.network_predict(net, buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))


def _cfg_for_head(path, size, head_index):
    """The cfg at `size`, batch 1, cut after the conv feeding the head_index-th [yolo]/[region] layer."""
    text = open(require_file(path)).read()
    sections = text.split("\n[")
    kept, heads = [], 0
    for section in sections:
        if section.startswith(("yolo]", "region]")):
            if heads == head_index:
                break
            heads += 1
        kept.append(section)
    cfg = "\n[".join(kept)
    for key, value in (("batch", 1), ("subdivisions", 1), ("width", size), ("height", size)):
        cfg = "\n".join(f"{key}={value}" if line.replace(" ", "").startswith(f"{key}=") else line
                        for line in cfg.split("\n"))
    return cfg


def _write_random_darknet_weights(model, names, path, seed):
    """Random weights in darknet's file layout, assigned to our layers by `darknet_layer_names` order."""
    rng = np.random.default_rng(seed)
    chunks = [np.array([0, 2, 0], "int32").tobytes(), np.array([0], "uint64").tobytes()]
    for name in names:
        layer = model.get_layer(name)
        conv = layer.conv if isinstance(layer, ConvBNAct) else layer
        k, _, c_in, n = conv.kernel.shape
        kernel = rng.normal(0, np.sqrt(1.0 / (k * k * c_in)), size=(n, c_in, k, k)).astype("float32")
        biases = rng.uniform(-0.1, 0.1, n).astype("float32")
        chunks.append(biases.tobytes())
        if isinstance(layer, ConvBNAct) and layer.bn is not None:
            scales = rng.uniform(0.8, 1.2, n).astype("float32")
            means = rng.uniform(-0.1, 0.1, n).astype("float32")
            variances = rng.uniform(0.8, 1.2, n).astype("float32")
            chunks += [scales.tobytes(), means.tobytes(), variances.tobytes()]
            layer.bn.set_weights([scales, biases, means, variances])
        else:
            conv.bias.assign(biases)
        chunks.append(kernel.tobytes())
        conv.kernel.assign(np.transpose(kernel, (2, 3, 1, 0)))
    with open(path, "wb") as handle:
        handle.write(b"".join(chunks))


# (model, cfg, size): Darknet-19's reorg, Darknet-53's FPN routes, SPP's concatenation order, tiny pools.
DARKNET_PARITY = [("yolov2", "yolov2.cfg", 64), ("yolov2-tiny", "yolov2-tiny.cfg", 96),
                  ("yolov3-spp", "yolov3-spp.cfg", 64), ("yolov3-tiny", "yolov3-tiny.cfg", 96)]


@pytest.mark.parity
@pytest.mark.parametrize("name, cfg, size", DARKNET_PARITY, ids=[c[0] for c in DARKNET_PARITY])
def test_raw_heads_equal_libdarknets_for_the_same_weights(tmp_path, name, cfg, size):
    require_file(LIBDARKNET, "(Debian package darknet)")
    kwargs = {"darknet_reorg": True} if name == "yolov2" else {}
    model = models.build(name, num_classes=80, input_shape=(size, size, 3), **kwargs)
    weights = os.path.join(tmp_path, "random.weights")
    _write_random_darknet_weights(model, models.darknet_layer_names(name), weights, seed=1)
    image = np.random.default_rng(2).uniform(size=(1, size, size, 3)).astype("float32")
    ours = model(image, training=False)
    ours = ours if isinstance(ours, (list, tuple)) else [ours]
    # darknet's heads come in cfg order: stride 32 first.
    for head, level in enumerate(reversed(ours)):
        level = level.numpy()[0]
        grid_h, grid_w, anchors, depth = level.shape
        pointer = _darknet_predict(_cfg_for_head(os.path.join(DARKNET_CFG, cfg), size, head), weights,
                                   np.transpose(image[0], (2, 0, 1)))
        theirs = np.ctypeslib.as_array(pointer, shape=(anchors * depth * grid_h * grid_w,)).copy()
        theirs = theirs.reshape(anchors, depth, grid_h, grid_w).transpose(2, 3, 0, 1)
        # pjreddie normalises with (x - mean) / (sqrt(var) + 1e-6), Keras with sqrt(var + 1e-5)
        np.testing.assert_allclose(level, theirs, rtol=2e-3, atol=2e-3 * np.abs(theirs).max())


# --- parity with ultralytics yolov5 7.0.14: its models/*.yaml, the same weights, the same raw levels.

def _ultralytics_module_path(keras_name):
    """`m2_m0_cv1` -> `model.2.m.0.cv1`; the head's `m24_m1_conv` -> `model.24.m.1`."""
    parts = keras_name.split("_")
    path = ["model", parts[0][1:]]
    for part in parts[1:]:
        if part[0] == "m" and part[1:].isdigit():
            path += ["m", part[1:]]
        elif part != "conv":
            path.append(part)
    return ".".join(path)


def _ultralytics_model(size, num_classes=80):
    harness = require_peer("yolov5_reference", "(.ci/install_parity installs torch and yolov5)")
    try:
        reference = harness.load()
    except ImportError as error:
        require_peer("yolov5", f"({error})")
        raise
    import yolov5  # noqa: PLC0415 - loaded by the harness above

    reference.torch.manual_seed(0)
    yaml = os.path.join(os.path.dirname(yolov5.__file__), "models", f"yolov5{size}.yaml")
    return reference.torch, reference.yolo.Model(yaml, ch=3, nc=num_classes)


@pytest.mark.parity
def test_yolov5n_equals_ultralytics_for_the_same_weights():
    torch, reference = _ultralytics_model("n")
    assert sum(p.numel() for p in reference.parameters()) == ULTRALYTICS_PARAMETERS["yolov5n"]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    modules = dict(reference.named_modules())
    model = models.build("yolov5n", num_classes=80, input_shape=(64, 96, 3))
    for layer in model.layers:
        if isinstance(layer, ConvBNAct):
            source = modules[_ultralytics_module_path(layer.name)]
            layer.conv.kernel.assign(source.conv.weight.detach().numpy().transpose(2, 3, 1, 0))
            layer.bn.set_weights([source.bn.weight.detach().numpy(), source.bn.bias.detach().numpy(),
                                  source.bn.running_mean.numpy(), source.bn.running_var.numpy()])
        elif isinstance(layer, keras.layers.Conv2D):
            source = modules[_ultralytics_module_path(layer.name)]
            layer.set_weights([source.weight.detach().numpy().transpose(2, 3, 1, 0), source.bias.detach().numpy()])
    images = np.random.default_rng(3).uniform(size=(2, 64, 96, 3)).astype("float32")
    reference.eval()
    reference.model[-1].training = True   # Detect returns the raw levels (B, A, H, W, 5 + C)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    ours = model(images, training=False)
    for level, their_level in zip(ours, theirs):
        their_level = their_level.numpy().transpose(0, 2, 3, 1, 4)
        np.testing.assert_allclose(level.numpy(), their_level, rtol=1e-4, atol=1e-4 * np.abs(their_level).max())


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("size", "smlx")
def test_yolov5_parameter_counts_equal_ultralytics_yaml_models(shape_models, size):
    _, reference = _ultralytics_model(size)
    assert sum(p.numel() for p in reference.parameters()) == _trainable(shape_models[f"yolov5{size}"])


# --- YOLOv4 against keras_yolo.weights.load_darknet, a cfg-driven builder checked against libdarknet,
# on AlexeyAB's cfgs (libdarknet, pjreddie's, has no mish nor grouped routes).

def _alexeyab_yolov4_cfg(size):
    """AlexeyAB darknet cfg/yolov4.cfg, section by section (anchors and loss options left out)."""
    sections = [f"[net]\nwidth={size}\nheight={size}\nchannels=3\n"]

    def conv(filters, size=1, stride=1, act="mish", bn=1):
        sections.append(f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride={stride}\n"
                        f"pad=1\nactivation={act}\n")

    def route(layers):
        sections.append(f"[route]\nlayers={layers}\n")

    def shortcut():
        sections.append("[shortcut]\nfrom=-3\nactivation=linear\n")

    def yolo(mask):
        sections.append(f"[yolo]\nmask={mask}\nanchors=12,16,19,36,40,28,36,75,76,55,72,146,142,110,192,243,459,401\n"
                        "classes=80\nnum=9\n")

    conv(32, 3)
    for filters, blocks, back in ((64, 1, 7), (128, 2, 10), (256, 8, 28), (512, 8, 28), (1024, 4, 16)):
        branch = filters if filters == 64 else filters // 2
        conv(filters, 3, 2)
        conv(branch)
        route(-2)
        conv(branch)
        for _ in range(blocks):
            conv(branch // 2 if filters == 64 else branch)
            conv(branch, 3)
            shortcut()
        conv(branch)
        route(f"-1,-{back}")
        conv(filters)
    leaky = "leaky"
    conv(512, act=leaky), conv(1024, 3, act=leaky), conv(512, act=leaky)
    for pool, back in ((5, -2), (9, -4), (13, None)):
        sections.append(f"[maxpool]\nstride=1\nsize={pool}\n")
        if back:
            route(back)
    route("-1,-3,-5,-6")
    conv(512, act=leaky), conv(1024, 3, act=leaky), conv(512, act=leaky)
    for filters, tap in ((256, 85), (128, 54)):
        conv(filters, act=leaky)
        sections.append("[upsample]\nstride=2\n")
        route(tap)
        conv(filters, act=leaky)
        route("-1,-3")
        for _ in range(2):
            conv(filters, act=leaky), conv(filters * 2, 3, act=leaky)
        conv(filters, act=leaky)
    conv(256, 3, act=leaky), conv(255, act="linear", bn=0), yolo("0,1,2")
    for filters, back, mask in ((256, 16, "3,4,5"), (512, 37, "6,7,8")):
        route(-4)
        conv(filters, 3, 2, act=leaky)
        route(f"-1,-{back}")
        for _ in range(3):
            conv(filters, act=leaky), conv(filters * 2, 3, act=leaky)
        conv(255, act="linear", bn=0), yolo(mask)
    return "\n".join(sections)


def _alexeyab_yolov4_tiny_cfg(size):
    """AlexeyAB darknet cfg/yolov4-tiny.cfg, section by section (anchors and loss options left out)."""
    sections = [f"[net]\nwidth={size}\nheight={size}\nchannels=3\n"]

    def conv(filters, size=3, stride=1, bn=1, act="leaky"):
        sections.append(f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride={stride}\n"
                        f"pad=1\nactivation={act}\n")

    conv(32, 3, 2), conv(64, 3, 2)
    for filters in (64, 128, 256):
        conv(filters)
        sections.append("[route]\nlayers=-1\ngroups=2\ngroup_id=1\n")
        conv(filters // 2), conv(filters // 2)
        sections.append("[route]\nlayers=-1,-2\n")
        conv(filters, 1)
        sections.append("[route]\nlayers=-6,-1\n")
        sections.append("[maxpool]\nsize=2\nstride=2\n")
    conv(512), conv(256, 1), conv(512), conv(255, 1, bn=0, act="linear")
    anchors = "anchors=10,14,23,27,37,58,81,82,135,169,344,319\nclasses=80\nnum=6\n"
    sections.append(f"[yolo]\nmask=3,4,5\n{anchors}")
    sections.append("[route]\nlayers=-4\n")
    conv(128, 1)
    sections.append("[upsample]\nstride=2\n")
    sections.append("[route]\nlayers=-1,23\n")
    conv(256), conv(255, 1, bn=0, act="linear")
    sections.append(f"[yolo]\nmask=1,2,3\n{anchors}")
    return "\n".join(sections)


@pytest.mark.parametrize("name, make_cfg", [
    pytest.param("yolov4", _alexeyab_yolov4_cfg, marks=pytest.mark.slow, id="yolov4"),
    pytest.param("yolov4-tiny", _alexeyab_yolov4_tiny_cfg, id="yolov4-tiny")])
def test_yolov4_equals_the_darknet_cfg_import_for_the_same_weights(tmp_path, name, make_cfg):
    from keras_yolo.weights import darknet  # noqa: PLC0415 - a peer module of the library

    size = 64
    cfg = os.path.join(tmp_path, f"{name}.cfg")
    with open(cfg, "w") as handle:
        handle.write(make_cfg(size))
    model = models.build(name, num_classes=80, input_shape=(size, size, 3))
    weights = os.path.join(tmp_path, "random.weights")
    _write_random_darknet_weights(model, models.darknet_layer_names(name), weights, seed=4)
    reference = darknet.load_darknet(cfg, weights, flavor="alexeyab")
    assert reference.count_params() == model.count_params() == DARKNET_PARAMETERS[name]
    images = np.random.default_rng(5).uniform(size=(1, size, size, 3)).astype("float32")
    for ours, theirs in zip(model(images, training=False), reference(images, training=False)):
        theirs = theirs.numpy()
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())
