"""The yolov8 network: parameter counts against ultralytics 8, output layout, head priors, saving.

Reference parameter counts: ultralytics 8.4.190's `cfg/models/v8/yolov8.yaml`
scale comments ("YOLOv8n summary: 129 layers, 3157200 parameters, 3157184
gradients") and, in the parity test, `DetectionModel("yolov8{n,s,m}.yaml")`
of the installed package. ultralytics' parameters include DFL's fixed
projection (a 1x1 conv with weights 0 .. 15, no gradient): the Keras model
leaves DFL to the decode layer, so its trainable count is ultralytics'
"gradients" figure, and BN's running statistics (buffers in torch) add to
Keras' `count_params()`.
"""

import math

import keras
import numpy as np
import pytest

from conftest import require_peer
from keras_yolo.layers import ConvBNAct
from keras_yolo.layers.c2f import apply_c2f
from keras_yolo.models import shapes_only
from keras_yolo.models.yolov8 import REG_MAX, YOLOV8_SCALES, head_widths, yolov8, yolov8_size

# yolov8.yaml's summary comments: (parameters, gradients); parameters - gradients = 16 = DFL's projection.
YOLOV8_PUBLISHED = {"n": (3_157_200, 3_157_184), "s": (11_166_560, 11_166_544), "m": (25_902_640, 25_902_624)}
DFL_PROJECTION = REG_MAX


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _bn_statistics(model):
    return sum(2 * layer.bn.gamma.shape[0] for layer in model.layers if isinstance(layer, ConvBNAct))


@pytest.fixture(scope="module")
def shape_models():
    with shapes_only():
        return {size: yolov8_size(size, input_shape=(None, None, 3)) for size in YOLOV8_PUBLISHED}


@pytest.mark.parametrize("size", sorted(YOLOV8_PUBLISHED))
def test_parameter_count_is_the_yamls_published_count(shape_models, size):
    parameters, gradients = YOLOV8_PUBLISHED[size]
    model = shape_models[size]
    assert _trainable(model) == gradients == parameters - DFL_PROJECTION
    assert model.count_params() == gradients + _bn_statistics(model)


@pytest.mark.parity
@pytest.mark.parametrize("size", sorted(YOLOV8_PUBLISHED))
def test_parameter_count_equals_installed_ultralytics(shape_models, size):
    tasks = require_peer("ultralytics.nn.tasks", "(ultralytics 8 parity reference)")
    reference = tasks.DetectionModel(f"yolov8{size}.yaml", nc=80, verbose=False)
    trainable = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    total = sum(p.numel() for p in reference.parameters())
    assert total - trainable == DFL_PROJECTION
    assert _trainable(shape_models[size]) == trainable
    # per module of the yaml as well, so a mismatch names the module
    ours = {}
    for weight in shape_models[size].trainable_weights:
        index = weight.path.split("/")[0].split("_")[0]
        ours[index] = ours.get(index, 0) + int(np.prod(weight.shape))
    theirs = {f"m{i}": sum(p.numel() for p in module.parameters() if p.requires_grad)
              for i, module in enumerate(reference.model)}
    assert ours == {key: value for key, value in theirs.items() if value}


@pytest.mark.parametrize("height, width", [(640, 640), (256, 416), (64, 96)])
def test_outputs_are_three_levels_of_dfl_and_class_logits(shape_models, height, width):
    outputs = shape_models["s"](keras.KerasTensor((2, height, width, 3)))
    assert [tuple(o.shape) for o in outputs] == [
        (2, height // s, width // s, 4 * REG_MAX + 80) for s in (8, 16, 32)]
    assert all(o.dtype == "float32" for o in outputs)


def test_mixed_precision_outputs_stay_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        with shapes_only():
            model = yolov8(num_classes=3, input_shape=(64, 64, 3), width_multiple=0.125)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("m22_cv3_0_2").compute_dtype == "float16"
    assert [o.dtype for o in model.outputs] == ["float32"] * 3


def test_scales_follow_the_yaml():
    # yolov8.yaml `scales`: [depth, width, max_channels]
    assert YOLOV8_SCALES == {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024), "m": (0.67, 0.75, 768),
                             "l": (1.00, 1.00, 512), "x": (1.00, 1.25, 512)}
    with shapes_only():
        model = yolov8_size("m", input_shape=(None, None, 3))
    # m caps 1024 channels at 768 before the width multiple: 768 * 0.75 = 576; P3 192 channels.
    assert model.get_layer("m9_cv2").filters == 576
    assert model.get_layer("m15_cv2").filters == 192
    assert len([l for l in model.layers if l.name.startswith("m4_m") and l.name.endswith("_cv1")]) == 4


def test_head_widths_are_detects():
    # Detect: c2 = max(16, ch0 // 4, 4 reg_max), c3 = max(ch0, min(nc, 100))
    assert head_widths(64, 80) == (64, 80)      # yolov8n, P3 = 64 channels
    assert head_widths(128, 3) == (64, 128)     # yolov8s
    assert head_widths(320, 80) == (80, 320)    # yolov8x
    assert head_widths(64, 1000) == (64, 100)


def test_head_biases_start_at_detect_bias_init():
    model = yolov8(num_classes=3, input_shape=(64, 64, 3), depth_multiple=0.33, width_multiple=0.25)
    for level, stride in enumerate((8, 16, 32)):
        np.testing.assert_array_equal(model.get_layer(f"m22_cv2_{level}_2").bias.numpy(), 2.0)
        cells = (640 / stride) ** 2
        np.testing.assert_allclose(model.get_layer(f"m22_cv3_{level}_2").bias.numpy(),
                                   math.log(5 / 3 / cells), rtol=1e-6)


def test_c2f_widths_and_parameters():
    inputs = keras.Input((8, 8, 24))
    outputs = apply_c2f(inputs, 32, 2, shortcut=True, activation="silu")
    model = keras.Model(inputs, outputs)
    c = 16  # hidden = int(32 * 0.5)
    cv1 = 24 * 2 * c + 2 * (2 * c)                 # 1x1 to 2c, BN gamma / beta
    bottleneck = 2 * (9 * c * c + 2 * c)           # two 3x3 c -> c
    cv2 = (2 + 2) * c * 32 + 2 * 32                # 1x1 from (2 + n) c
    assert _trainable(model) == cv1 + 2 * bottleneck + cv2


def test_c2f_matches_a_numpy_reference():
    """y = cv2(concat(a, b, m1(b), m2(m1(b)))) with (a, b) = chunk(cv1(x)); identity BN, linear act."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((5, 6, 4))
    model = keras.Model(inputs, apply_c2f(inputs, 6, 2, shortcut=True, activation="linear",
                                          use_batch_norm=False, use_bias=False))
    for weight in model.weights:
        weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
    x = rng.normal(size=(1, 5, 6, 4)).astype("float32")

    def conv(name, value):
        kernel = model.get_layer(name).conv.kernel.numpy()
        k = kernel.shape[0]
        padded = np.pad(value, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
        out = np.zeros(value.shape[:3] + (kernel.shape[-1],))
        for i in range(value.shape[1]):
            for j in range(value.shape[2]):
                out[:, i, j] = np.einsum("bhwc,hwco->bo", padded[:, i:i + k, j:j + k], kernel)
        return out

    y = conv("c2f_cv1", x)
    parts = [y[..., :3], y[..., 3:]]
    for i in range(2):
        parts.append(parts[-1] + conv(f"c2f_m{i}_cv2", conv(f"c2f_m{i}_cv1", parts[-1])))
    expected = conv("c2f_cv2", np.concatenate(parts, -1))
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_saved_model_reloads_with_the_same_outputs(tmp_path):
    model = yolov8(num_classes=2, input_shape=(64, 96, 3), depth_multiple=0.33, width_multiple=0.125)
    images = np.random.default_rng(1).uniform(0, 1, (2, 64, 96, 3)).astype("float32")
    expected = [o.numpy() for o in model(images)]
    path = str(tmp_path / "v8.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored).__name__ == "YoloModel"
    for actual, want in zip(restored(images), expected):
        np.testing.assert_array_equal(actual.numpy(), want)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="size must be one of"):
        yolov8_size("q")
    with pytest.raises(ValueError, match="reg_max"):
        yolov8(num_classes=3, reg_max=0)
    with pytest.raises(ValueError, match="num_classes"):
        yolov8(num_classes=0)


@pytest.mark.slow
def test_small_v8_fits_with_yolov8_loss():
    from keras_yolo import data
    from keras_yolo.losses.yolo_v8 import YoloV8Loss
    from keras_yolo.models.yolov8 import small_v8

    keras.utils.set_random_seed(0)
    dataset = data.shapes(num_images=8, image_size=64, num_classes=3, max_boxes=4, seed=0).batch(4)
    model = small_v8(num_classes=3, input_size=64)
    model.compile(keras.optimizers.Adam(1e-3), loss=YoloV8Loss(num_classes=3))
    history = model.fit(dataset.repeat(), steps_per_epoch=4, epochs=3, verbose=0).history
    losses = history["loss"]
    assert np.all(np.isfinite(losses))
    for term in ("box", "cls", "dfl"):   # YoloV8Loss.term_names, logged per epoch
        assert np.isfinite(history[term]).all() and min(history[term]) > 0, term
    assert losses[-1] < losses[0]
