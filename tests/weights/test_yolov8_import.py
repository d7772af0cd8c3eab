"""yolov8 checkpoint import: the same raw head outputs as ultralytics 8.

The reference is the installed `ultralytics` package (8.4.190, CPU torch):
`DetectionModel("yolov8{n,s}.yaml", nc=3)` built offline with random weights,
random batch-norm statistics and random head biases, in eval mode. Its
`Detect` returns `(decoded, raw)` with raw `{"boxes": (B, 4 reg_max, N),
"scores": (B, C, N)}` over the levels' cells concatenated; `load_yolov8` must
give a Keras model whose level `l` equals that raw block reshaped to
`(B, H_l, W_l, 4 reg_max + C)`. Tolerance `1e-4 * max(1, max |reference|)`
(float32 sums in another order).
"""

import copy

import numpy as np
import pytest

from conftest import require_peer
from keras_yolo.models.yolov8 import yolov8_size
from keras_yolo.weights.torch_state import torch_prefix
from keras_yolo.weights.yolov8 import load_yolov8, load_yolov8_weights, yolov8_size_of

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4
NUM_CLASSES = 3
INPUT_SHAPE = (128, 96, 3)  # not square: a swapped H / W shows


@pytest.fixture(scope="module")
def torch():
    return require_peer("torch", "(ultralytics 8 parity reference)")


@pytest.fixture(scope="module")
def tasks():
    return require_peer("ultralytics.nn.tasks", "(ultralytics 8 parity reference)")


def _random_model(torch, tasks, size, seed=0):
    torch.manual_seed(seed)
    model = tasks.DetectionModel(f"yolov8{size}.yaml", nc=NUM_CLASSES, verbose=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
        head = model.model[-1]
        for branch in (*head.cv2, *head.cv3):
            branch[-1].bias.uniform_(-1.0, 1.0)   # away from bias_init's constants
    return model


@pytest.fixture(scope="module")
def torch_model(torch, tasks):
    return _random_model(torch, tasks, "n")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (2, *INPUT_SHAPE)).astype("float32")


def _run(torch, model, images):
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))


def _reference_levels(torch, model, images):
    """Detect's raw outputs, split per level into (B, H, W, 4 reg_max + C)."""
    _, raw = _run(torch, model, images)
    flat = torch.cat([raw["boxes"], raw["scores"]], 1).numpy()   # (B, 4 reg_max + C, N)
    levels, start = [], 0
    for feature in raw["feats"]:
        batch, _, height, width = feature.shape
        block = flat[:, :, start:start + height * width]
        levels.append(block.reshape(batch, -1, height, width).transpose(0, 2, 3, 1))
        start += height * width
    assert start == flat.shape[-1]
    return levels


def _assert_close(actual, expected, what):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    error = np.abs(actual - expected).max()
    scale = max(1.0, np.abs(expected).max())
    assert error <= TOLERANCE * scale, f"{what}: max |keras - torch| = {error:.3g} (scale {scale:.3g})"


@pytest.fixture(scope="module")
def keras_model(torch_model):
    return load_yolov8(torch_model, input_shape=INPUT_SHAPE)


def test_raw_head_outputs_match_ultralytics(torch, torch_model, keras_model, images):
    expected = _reference_levels(torch, torch_model, images)
    outputs = keras_model(images)
    assert [o.shape[1:3] for o in outputs] == [(16, 12), (8, 6), (4, 3)]
    for level, (actual, want) in enumerate(zip(outputs, expected)):
        _assert_close(actual, want, f"level {level}")


def test_decoded_boxes_match_ultralytics_detect(torch, torch_model, keras_model, images):
    """Imported weights + YoloV8Decode = Detect in eval mode: (B, 4 + C, N), centre xywh pixels then sigmoid classes."""
    from keras_yolo import versions
    from keras_yolo.layers import YoloV8Decode

    decoded, _ = _run(torch, torch_model, images)
    expected = decoded.numpy().transpose(0, 2, 1)
    decode = versions.decode_layer(keras_model.decode_config, "center_xywh")   # as serving builds it
    assert isinstance(decode, YoloV8Decode) and decode.num_classes == NUM_CLASSES
    out = decode(keras_model(images))
    _assert_close(out["boxes"], expected[..., :4], "boxes (pixels)")
    _assert_close(out["class_probs"], expected[..., 4:], "class probabilities")


def test_decode_config_names_size_classes_and_bins(keras_model):
    assert keras_model.decode_config == {"version": "v8", "num_classes": NUM_CLASSES, "reg_max": 16,
                                         "strides": [8, 16, 32], "input_shape": list(INPUT_SHAPE),
                                         "size": "n"}


@pytest.mark.slow
def test_yolov8s_raw_outputs_match_ultralytics(torch, tasks, images):
    model = _random_model(torch, tasks, "s", seed=1)
    expected = _reference_levels(torch, model, images)
    for level, (actual, want) in enumerate(zip(load_yolov8(model, INPUT_SHAPE)(images), expected)):
        _assert_close(actual, want, f"yolov8s level {level}")


@pytest.mark.parametrize("size", ["n", "s", "m", pytest.param("l", marks=pytest.mark.slow),
                                  pytest.param("x", marks=pytest.mark.slow)])
def test_size_is_recognised_from_the_state_dict(tasks, size):
    model = tasks.DetectionModel(f"yolov8{size}.yaml", nc=NUM_CLASSES, verbose=False)
    state = {key: np.empty(value.shape, np.float32) for key, value in model.state_dict().items()}
    assert yolov8_size_of(state) == size


def test_every_checkpoint_tensor_has_a_place(torch_model):
    prefixes = {torch_prefix(layer.name) for layer in yolov8_size("n", num_classes=NUM_CLASSES,
                                                                   input_shape=(64, 64, 3)).layers}
    keys = {key.rsplit(".", 2)[0] if ".conv." in key or ".bn." in key else key.rsplit(".", 1)[0]
            for key in torch_model.state_dict() if not key.endswith("num_batches_tracked")}
    assert keys - prefixes == {"model.22.dfl"}   # DFL's fixed projection: checked, not copied


def test_pt_checkpoint_and_npz_load_the_same(torch, torch_model, keras_model, images, tmp_path):
    pt = tmp_path / "last.pt"
    torch.save({"model": copy.deepcopy(torch_model), "ema": None, "epoch": 3}, pt)  # ultralytics' layout
    npz = tmp_path / "weights.npz"
    np.savez(npz, **{k: v.numpy() for k, v in torch_model.state_dict().items()})
    want = [o.numpy() for o in keras_model(images)]
    for source in (str(pt), str(npz)):
        got = load_yolov8(source, input_shape=INPUT_SHAPE)(images)
        for actual, expected in zip(got, want):
            np.testing.assert_array_equal(actual.numpy(), expected)


def test_mismatched_checkpoint_leaves_the_model_unchanged(torch, tasks, torch_model):
    model = yolov8_size("n", num_classes=NUM_CLASSES + 1, input_shape=(64, 64, 3))
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=r"model\.22\.cv3\.0\.2\.weight' has shape"):
        load_yolov8_weights(model, torch_model)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)


def test_foreign_tensors_and_a_wrong_dfl_projection_are_refused(torch_model):
    state = {k: v.numpy().copy() for k, v in torch_model.state_dict().items()}
    model = yolov8_size("n", num_classes=NUM_CLASSES, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="no place for"):
        load_yolov8_weights(model, {**state, "model.23.extra.weight": np.zeros(3, np.float32)})
    state["model.22.dfl.conv.weight"] = state["model.22.dfl.conv.weight"][..., ::-1].copy() * 0 + 1
    with pytest.raises(ValueError, match="DFL"):
        load_yolov8_weights(model, state)


def test_a_checkpoint_of_ultralytics_objects_without_ultralytics_says_what_to_install(torch, tmp_path,
                                                                                     monkeypatch):
    import sys
    import types

    module = types.ModuleType("ultralytics_absent")

    class Model:  # stands for ultralytics.nn.tasks.DetectionModel, pickled by reference
        pass

    Model.__module__, Model.__qualname__ = module.__name__, "Model"
    module.Model = Model
    monkeypatch.setitem(sys.modules, module.__name__, module)
    path = tmp_path / "best.pt"
    torch.save({"model": Model()}, path)
    monkeypatch.delitem(sys.modules, module.__name__)
    with pytest.raises(ImportError, match="install `ultralytics`"):
        load_yolov8(str(path))
