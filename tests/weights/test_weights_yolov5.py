"""yolov5 checkpoint import: same raw head outputs and decoded boxes as ultralytics.

The reference is the `yolov5` package (ultralytics yolov5 7.0.14, CPU torch):
`DetectionModel("yolov5n.yaml")` with random weights, random batch-norm
statistics and non-default anchors (as autoanchor leaves them), in eval mode.
Its `Detect` returns `(decoded, raw)`; `load_yolov5` must give a Keras model
whose outputs equal `raw` (as `(B, ny, nx, na, no)`) and whose `YoloV5Decode`
equals `decoded`. Tolerance `1e-4 * max(1, max |reference|)` (float32 sums in
another order).
"""

import copy
import os

import numpy as np
import pytest

from conftest import require_peer
from keras_yolo.weights import export_yolov5_npz, load_yolov5, load_yolov5_weights, make_yolov5_decoder
from keras_yolo.weights import yolov5 as yolov5_import

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4
NUM_CLASSES = 3
INPUT_SHAPE = (128, 96, 3)  # not square: a swapped H / W shows
ANCHOR_SCALE = 1.1          # anchors away from the yaml's, as autoanchor leaves them


@pytest.fixture(scope="module")
def reference():
    return require_peer("yolov5_reference", "(torch + yolov5 parity reference)").load()


@pytest.fixture(scope="module")
def torch_model(reference):
    torch = reference.torch
    import yolov5

    torch.manual_seed(0)
    yaml = os.path.join(os.path.dirname(yolov5.__file__), "models", "yolov5n.yaml")
    model = reference.yolo.Model(yaml, ch=3, nc=NUM_CLASSES).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
        model.model[-1].anchors *= ANCHOR_SCALE
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (2, *INPUT_SHAPE)).astype("float32")


@pytest.fixture(scope="module")
def torch_outputs(reference, torch_model, images):
    torch = reference.torch
    with torch.no_grad():
        decoded, raw = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    return decoded.numpy(), [r.numpy() for r in raw]


@pytest.fixture(scope="module")
def keras_model(torch_model):
    return load_yolov5(torch_model, input_shape=INPUT_SHAPE)


def _assert_close(actual, expected, what):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    error = np.abs(actual - expected).max()
    scale = max(1.0, np.abs(expected).max())
    assert error <= TOLERANCE * scale, f"{what}: max |keras - torch| = {error:.3g} (scale {scale:.3g})"


def test_raw_head_outputs_match_ultralytics(keras_model, torch_outputs, images):
    _, raw = torch_outputs
    outputs = keras_model(images)
    assert len(outputs) == 3
    for level, (actual, expected) in enumerate(zip(outputs, raw)):
        # Detect: (bs, na, ny, nx, no) -> keras-yolo's (bs, ny, nx, na, no)
        _assert_close(actual, expected.transpose(0, 2, 3, 1, 4), f"level {level}")


def test_decoded_boxes_match_ultralytics_detect(keras_model, torch_outputs, images):
    decoded, _ = torch_outputs
    config = keras_model.decode_config
    assert config["size"] == "n" and config["num_classes"] == NUM_CLASSES
    np.testing.assert_allclose(config["anchors"][0][0], [10 * ANCHOR_SCALE, 13 * ANCHOR_SCALE], rtol=1e-6)
    outputs = keras_model(images)
    # Detect lists level, anchor, row, column; keras-yolo level, row, column, anchor.
    blocks, start = [], 0
    for level in outputs:
        batch, height, width, anchors, channels = level.shape
        block = decoded[:, start:start + anchors * height * width]
        blocks.append(block.reshape(batch, anchors, height, width, channels)
                      .transpose(0, 2, 3, 1, 4).reshape(batch, -1, channels))
        start += anchors * height * width
    expected = np.concatenate(blocks, axis=1)
    out = make_yolov5_decoder(config, "center_xywh")(outputs)
    _assert_close(out["boxes"], expected[..., :4], "boxes (pixels)")
    _assert_close(out["objectness"], expected[..., 4], "objectness")
    _assert_close(out["class_probs"], expected[..., 5:], "class probabilities")


def _assert_same_state(got, want, rtol=0.0, what=""):
    assert sorted(got) == sorted(want), what
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=rtol and 1e-4,
                                   err_msg=f"{what} {key}")


def test_pt_checkpoint_state_dict_and_npz_read_the_same(reference, torch_model, tmp_path):
    torch = reference.torch
    want = yolov5_import.state_dict_of(torch_model)
    checkpoint = str(tmp_path / "last.pt")
    # ultralytics' train.py layout (model object in half precision, ema None).
    torch.save({"epoch": -1, "model": copy.deepcopy(torch_model).half(), "ema": None}, checkpoint)
    state_dict = str(tmp_path / "state.pt")
    torch.save(torch_model.state_dict(), state_dict)
    npz = export_yolov5_npz(state_dict, str(tmp_path / "state.npz"))
    _assert_same_state(yolov5_import.state_dict_of(state_dict), want, what="state-dict .pt")
    _assert_same_state(yolov5_import.state_dict_of(npz), want, what=".npz")
    # half precision keeps about 3 significant digits
    _assert_same_state(yolov5_import.state_dict_of(checkpoint), want, rtol=1e-3, what="half .pt")


@pytest.mark.parametrize("size, stem, blocks", [("n", 16, 1), ("s", 32, 1), ("m", 48, 2),
                                                 ("l", 64, 3), ("x", 80, 4)])
def test_size_is_read_from_the_shapes(size, stem, blocks):
    state = {"model.0.conv.weight": np.zeros((stem, 3, 6, 6), np.float32)}
    for block in range(blocks):
        state[f"model.2.m.{block}.cv1.conv.weight"] = np.zeros((1,), np.float32)
    assert yolov5_import._size_of(state) == size


def test_mismatched_checkpoints_name_the_tensor_and_change_nothing(torch_model, keras_model):
    state = yolov5_import.state_dict_of(torch_model)
    before = keras_model.get_weights()
    broken = dict(state)
    broken["model.4.m.1.cv2.conv.weight"] = broken["model.4.m.1.cv2.conv.weight"][:, :-1]
    with pytest.raises(ValueError, match=r"model\.4\.m\.1\.cv2\.conv\.weight"):
        load_yolov5_weights(keras_model, broken)
    extra = dict(state, **{"model.25.weight": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match="no place for"):
        load_yolov5_weights(keras_model, extra)
    for got, want in zip(keras_model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(FileNotFoundError, match="checkpoint="):
        load_yolov5("/nonexistent/yolov5s.pt")


def test_convert_command_from_npz(torch_model, keras_model, images, tmp_path, capsys):
    """`python -m serving convert --from yolov5 --checkpoint x.npz --out x.keras`."""
    import keras

    from serving.__main__ import main

    npz = export_yolov5_npz(torch_model, str(tmp_path / "n.npz"))
    out = str(tmp_path / "n.keras")
    assert main(["convert", "--from", "yolov5", "--checkpoint", npz, "--input-size",
                 str(INPUT_SHAPE[0]), str(INPUT_SHAPE[1]), "--out", out, "--no-verify"]) == 0
    assert "yolov5n" in capsys.readouterr().out
    restored = keras.saving.load_model(out)
    for got, want in zip(restored(images), keras_model(images)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_repository_checkpoint_pickling_models_yolo_loads(reference, torch_model, tmp_path,
                                                          monkeypatch):
    """Release checkpoints (yolov5s.pt) pickle `models.yolo.DetectionModel`,
    `models.common.Conv`, ...: the module paths of a yolov5 repository checkout."""
    import sys

    torch = reference.torch
    classes = {type(m) for m in torch_model.modules()
               if type(m).__module__.startswith("yolov5.")}
    path = str(tmp_path / "release.pt")
    with monkeypatch.context() as patch:
        for cls in classes:
            short = cls.__module__[len("yolov5."):]
            patch.setattr(cls, "__module__", short)
            patch.setitem(sys.modules, short, sys.modules[f"yolov5.{short}"])
        torch.save({"model": torch_model, "ema": None}, path)
    aliases = ("models", "models.yolo", "models.common", "models.experimental", "utils",
               "utils.general")
    for name in aliases:
        monkeypatch.delitem(sys.modules, name, raising=False)
    import zipfile

    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"cmodels.yolo\nDetectionModel" in pickled  # pickle GLOBAL of the repository path
    try:
        got = yolov5_import.state_dict_of(path)
    finally:
        for name in aliases:
            sys.modules.pop(name, None)
    _assert_same_state(got, yolov5_import.state_dict_of(torch_model), what="release .pt")
