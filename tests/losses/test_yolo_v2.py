"""YoloV2Loss: the seed's objective in float64 numpy and darknet parity.
The default mode is checked against `seed_loss_np`, a loop-by-loop float64
reading of the seed's formula (symbols read as in `YoloV2Loss`'s docstring:
x, y, w, h in grid cells with x = logistic(t_x) + c_x and w = p_w e^{t_w};
(2 - w h) with the truth's size in fractions of the image; the objectness
target the plain IoU of the decoded box with its truth). `darknet_compat` is
checked against pjreddie darknet's own `forward_region_layer` (libdarknet).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import require_peer
from keras_yolo import anchors as default_anchors
from keras_yolo import boxes as box_ops
from keras_yolo.assign.groundtruth import GroundTruthError
from keras_yolo.layers import YoloV2Decode
from keras_yolo.losses import YoloV2Loss
from keras_yolo.models import YoloModel
from references import sigmoid
from v2_cases import ANCHORS, ANCHORS_CELLS, STRIDE, random_case, responsible, seed_loss_np


def components(loss, raw, boxes, labels, **kwargs):
    parts = loss.components({"boxes": boxes, "labels": labels},
                            tf.constant(raw), **kwargs)
    return {k: float(v) for k, v in parts.items()}


# --- default mode: the seed ---------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seed_terms_match_float64_numpy(seed):
    raw, boxes, labels = random_case(seed)
    loss = YoloV2Loss(num_classes=4, anchors=ANCHORS, lambda_coord=2.0,
                      lambda_obj=3.0, lambda_noobj=0.5, lambda_class=1.5)
    ours = components(loss, raw, boxes, labels)
    ref = seed_loss_np(raw, boxes, labels, ANCHORS_CELLS, 2.0, 3.0, 0.5, 1.5)
    for key in ("box", "obj", "noobj", "cls"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key
    assert ref["box"] > 0 and ref["obj"] > 0 and ref["cls"] > 0
    total = float(loss({"boxes": boxes, "labels": labels}, tf.constant(raw)))
    assert total == pytest.approx(sum(ref.values()), rel=1e-5)


def test_ignore_thresh_exempts_overlapping_predictions():
    raw, boxes, labels = random_case(3, scale=0.3)
    ref_none = seed_loss_np(raw, boxes, labels, ANCHORS_CELLS)
    ref = seed_loss_np(raw, boxes, labels, ANCHORS_CELLS, ignore_thresh=0.3)
    assert ref["noobj"] < ref_none["noobj"]  # the threshold matters here
    loss = YoloV2Loss(num_classes=4, anchors=ANCHORS, ignore_thresh=0.3)
    ours = components(loss, raw, boxes, labels)
    assert ours["noobj"] == pytest.approx(ref["noobj"], rel=1e-5)


def test_pixel_box_format_on_a_non_square_grid():
    raw, boxes, labels = random_case(4, grid=(4, 6))
    image_shape = (4 * STRIDE, 6 * STRIDE)
    xyxy = box_ops.convert(boxes, "rel_center_xywh", "xyxy", image_shape).numpy()
    loss = YoloV2Loss(num_classes=4, anchors=ANCHORS, bounding_box_format="xyxy")
    ours = components(loss, raw, xyxy, labels)
    ref = seed_loss_np(raw, boxes, labels, ANCHORS_CELLS)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-5), key


def test_seed_gradient_matches_finite_differences_of_numpy():
    raw, boxes, labels = random_case(5, batch=2, grid=(3, 3), max_boxes=3)
    loss = YoloV2Loss(num_classes=4, anchors=ANCHORS)
    x = tf.constant(raw)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss({"boxes": boxes, "labels": labels}, x)
    grad = tape.gradient(value, x).numpy()
    # The IoU objectness target is a constant: hold it fixed in the numpy
    # derivative by differentiating every other entry (x, y, w, h move IoU).
    rng = np.random.default_rng(0)
    slots = responsible(boxes[0], labels[0], (3, 3), ANCHORS_CELLS)
    picks = [(0, r, c, a, e) for (r, c, a) in slots for e in (4, 5, 6)]
    picks += [tuple(rng.integers(0, n) for n in (2, 3, 3, 3)) + (4,)
              for _ in range(6)]
    eps = 1e-6
    for index in picks:
        up, down = raw.astype(np.float64), raw.astype(np.float64)
        up[index] += eps
        down[index] -= eps
        numeric = (sum(seed_loss_np(up, boxes, labels, ANCHORS_CELLS).values())
                   - sum(seed_loss_np(down, boxes, labels, ANCHORS_CELLS).values())
                   ) / (2 * eps)
        assert grad[index] == pytest.approx(numeric, rel=1e-3, abs=1e-5), index


def test_box_gradient_of_seed_mode_is_the_squared_error_derivative():
    """One truth, one responsible anchor: dL/dt_w = 2 λ (2-wh) (ŵ-w) ŵ / B."""
    raw = np.zeros((1, 2, 2, 3, 6), np.float32)
    raw[0, 1, 0, 1, 2] = 0.3
    # Cell (1, 0); 2 x 1.8 cells overlaps anchor 1 (2.2 x 3) most.
    boxes = np.array([[[0.3, 0.7, 1.0, 0.9]]], np.float32)
    labels = np.array([[0]], np.int32)
    loss = YoloV2Loss(num_classes=1, anchors=ANCHORS, lambda_coord=1.0)
    x = tf.constant(raw)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss.components({"boxes": boxes, "labels": labels}, x)["box"]
    w_hat = ANCHORS_CELLS[1, 0] * np.exp(0.3)
    expected = 2 * (2 - 1.0 * 0.9) * (w_hat - 1.0 * 2) * w_hat
    assert tape.gradient(value, x).numpy()[0, 1, 0, 1, 2] == pytest.approx(
        expected, rel=1e-5)


def test_no_nan_from_huge_outputs_off_the_responsible_anchor():
    raw, boxes, labels = random_case(6)
    raw[..., 2:4] = 200.0  # e^200 overflows float32
    raw[0, ..., 2:4] = 0.0
    boxes[0, 2:] = 0.0
    labels[0, 2:] = -1
    labels[1:] = -1
    loss = YoloV2Loss(num_classes=4, anchors=ANCHORS, ignore_thresh=0.5)
    x = tf.constant(raw)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss({"boxes": boxes, "labels": labels}, x)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(tape.gradient(value, x).numpy()))


def test_float16_outputs_and_images_without_truth():
    raw, boxes, labels = random_case(7)
    labels[:] = -1
    loss = YoloV2Loss(num_classes=4, anchors=ANCHORS)
    parts = loss.components({"boxes": boxes, "labels": labels},
                            tf.constant(raw, tf.float16))
    assert float(parts["box"]) == 0 and float(parts["cls"]) == 0
    ref = seed_loss_np(raw.astype(np.float16), boxes, labels, ANCHORS_CELLS)
    assert float(parts["noobj"]) == pytest.approx(ref["noobj"], rel=1e-4)


# --- darknet_compat: libdarknet's [region] layer --------------------------------

def darknet_case(seed, batch=3, grid=(5, 6), num_classes=4, num_truths=5):
    """Raw outputs and truths in darknet's form (rows of x = 0 end a list)."""
    rng = np.random.default_rng(seed)
    height, width = grid
    raw = rng.normal(0, 1.0, (batch, height, width, 3, 5 + num_classes))
    truths = np.zeros((batch, num_truths, 5))
    for b in range(batch):
        n = num_truths - b  # several truths, a different number per image
        truths[b, :n, :2] = rng.uniform(0.02, 0.98, (n, 2))
        truths[b, :n, 2:4] = rng.uniform(0.05, 0.8, (n, 2))
        truths[b, :n, 4] = rng.integers(0, num_classes, n)
    # Two truths on the same cell and anchor: darknet keeps the later one.
    truths[0, 1, :4] = truths[0, 0, :4] + [0.002, 0.001, 0.02, 0.01]
    # Predictions that overlap a truth, so `thresh` has predictions to ignore.
    raw[:, :, :, :, 2:4] *= 0.3
    return raw.astype(np.float32), truths.astype(np.float32)


def keras_truth(truths):
    labels = np.where(truths[..., 0] > 0, truths[..., 4], -1).astype(np.int32)
    return {"boxes": truths[..., :4], "labels": labels}


def darknet_gradient(raw, y_true, seen, num_classes, **options):
    loss = YoloV2Loss(num_classes=num_classes, anchors=ANCHORS,
                      darknet_compat=True, seen=seen, count_seen=False, **options)
    x = tf.constant(raw)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(y_true, x)
    return -raw.shape[0] * tape.gradient(value, x).numpy()


PARITY_CASES = [
    dict(seed=0, seen=0),
    dict(seed=1, seen=20000),
    dict(seed=2, seen=64, rescore=False),
    dict(seed=3, seen=12800, rescore=False, bias_match=False),
    dict(seed=4, seen=0, bias_match=False, thresh=0.3, coord_scale=2.0,
         object_scale=3.0, noobject_scale=0.5, class_scale=1.5),
]


@pytest.mark.parity
@pytest.mark.parametrize("case", PARITY_CASES, ids=lambda c: str(c))
def test_darknet_compat_gradient_equals_libdarknet(case):
    reference = require_peer("darknet_v2_reference", "(Debian darknet + gcc)")
    case = dict(case)
    raw, truths = darknet_case(case.pop("seed"))
    seen = case.pop("seen")
    ref = reference.region_forward(raw, truths, ANCHORS_CELLS, seen=seen, **case)
    ours = darknet_gradient(raw, keras_truth(truths), seen, 4, **case)
    np.testing.assert_allclose(ours, ref["gradient"], rtol=0, atol=1e-4)
    assert np.abs(ref["gradient"]).max() > 0.5  # not a vacuous comparison


@pytest.mark.parity
def test_darknet_prior_term_switches_off_at_12800_images():
    reference = require_peer("darknet_v2_reference", "(Debian darknet + gcc)")
    raw, truths = darknet_case(5, batch=2)
    on = reference.region_forward(raw, truths, ANCHORS_CELLS, seen=12799)
    off = reference.region_forward(raw, truths, ANCHORS_CELLS, seen=12800)
    assert np.abs(on["gradient"] - off["gradient"]).max() > 1e-3
    for seen, ref in ((12799, on), (12800, off)):
        ours = darknet_gradient(raw, keras_truth(truths), seen, 4)
        np.testing.assert_allclose(ours, ref["gradient"], rtol=0, atol=1e-4)


@pytest.mark.parity
def test_darknet_truth_list_ends_at_x_zero_and_holds_30():
    reference = require_peer("darknet_v2_reference", "(Debian darknet + gcc)")
    rng = np.random.default_rng(6)
    raw = rng.normal(0, 1, (2, 4, 4, 3, 7)).astype(np.float32)
    truths = np.zeros((2, 32, 5), np.float32)
    truths[:, :, :2] = rng.uniform(0.02, 0.98, (2, 32, 2))
    truths[:, :, 2:4] = rng.uniform(0.05, 0.5, (2, 32, 2))
    truths[:, :, 4] = rng.integers(0, 2, (2, 32))
    truths[0, 3, 0] = 0.0  # image 0: darknet stops reading here
    ref = reference.region_forward(raw, truths[:, :30], ANCHORS_CELLS, seen=0)
    ours = darknet_gradient(raw, keras_truth(truths) | {
        "labels": truths[..., 4].astype(np.int32)}, 0, 2)
    np.testing.assert_allclose(ours, ref["gradient"], rtol=0, atol=1e-4)


@pytest.mark.parity
def test_darknet_delta_is_the_gradient_for_w_h_and_classes():
    """The quirk: darknet's delta already is -dL/d(raw) for w, h, classes; for
    x, y, objectness its GPU backward multiplies by logistic'(raw)."""
    reference = require_peer("darknet_v2_reference", "(Debian darknet + gcc)")
    raw, truths = darknet_case(7, batch=2)
    ref = reference.region_forward(raw, truths, ANCHORS_CELLS, seen=0)
    ours = darknet_gradient(raw, keras_truth(truths), 0, 4)
    np.testing.assert_allclose(ours[..., [2, 3, 5, 6, 7, 8]],
                               ref["delta"][..., [2, 3, 5, 6, 7, 8]], atol=1e-4)
    s = sigmoid(raw[..., [0, 1, 4]].astype(np.float64))
    np.testing.assert_allclose(ours[..., [0, 1, 4]],
                               ref["delta"][..., [0, 1, 4]] * s * (1 - s), atol=1e-4)
    assert np.abs(ref["delta"][..., 4] - ours[..., 4]).max() > 0.1


@pytest.mark.parity
def test_seen_counts_images_in_model_fit_under_jit():
    reference = require_peer("darknet_v2_reference", "(Debian darknet + gcc)")
    raw, truths = darknet_case(8, batch=2, grid=(2, 2))
    loss = YoloV2Loss(num_classes=4, anchors=ANCHORS, darknet_compat=True,
                      seen=12796)
    x = tf.constant(raw)
    with tf.GradientTape() as tape:  # 12796 + 2 = 12798: prior on
        tape.watch(x)
        value = loss(keras_truth(truths), x)
    assert int(loss.seen.numpy()) == 12798
    ref = reference.region_forward(raw, truths, ANCHORS_CELLS, seen=12798)
    np.testing.assert_allclose(-2 * tape.gradient(value, x).numpy(),
                               ref["gradient"], atol=1e-4)

    inputs = keras.Input((64, 64, 3))
    head = keras.layers.Conv2D(3 * 9, 3, strides=32, padding="same")(inputs)
    outputs = keras.layers.Reshape((2, 2, 3, 9))(head)
    model = YoloModel(inputs, outputs)
    model.compile(optimizer="sgd", loss=loss, jit_compile=True)
    images = np.zeros((6, 64, 64, 3), np.float32)
    y = {"boxes": np.tile(truths[:1, :, :4], (6, 1, 1)),
         "labels": np.tile(keras_truth(truths)["labels"][:1], (6, 1))}
    model.fit(images, y, batch_size=3, epochs=1, verbose=0)
    assert int(loss.seen.numpy()) == 12798 + 6


# --- Keras contract -------------------------------------------------------------

@pytest.mark.parametrize("darknet_compat", [False, True])
def test_jit_compile_matches_eager(darknet_compat):
    raw, boxes, labels = random_case(9)
    loss = YoloV2Loss(num_classes=4, anchors=ANCHORS, ignore_thresh=0.5,
                      darknet_compat=darknet_compat, count_seen=False)
    y_true = {"boxes": tf.constant(boxes), "labels": tf.constant(labels)}

    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(y_true, x)
        return value, tape.gradient(value, x)

    eager_value, eager_grad = grad(tf.constant(raw))
    xla_value, xla_grad = tf.function(grad, jit_compile=True)(tf.constant(raw))
    assert float(xla_value) == pytest.approx(float(eager_value), rel=1e-5)
    np.testing.assert_allclose(xla_grad, eager_grad, rtol=1e-4, atol=1e-6)
    decode = YoloV2Decode(anchors=ANCHORS, bounding_box_format="xyxy")
    xla = tf.function(decode, jit_compile=True)(tf.constant(raw))
    np.testing.assert_allclose(xla["boxes"], decode(raw)["boxes"], rtol=1e-5,
                               atol=1e-4)


def test_get_config_round_trip():
    loss = YoloV2Loss(num_classes=7, anchors=default_anchors.YOLOV2_VOC_ANCHORS,
                      lambda_coord=2.0, ignore_thresh=0.6,
                      bounding_box_format="xyxy", darknet_compat=True,
                      rescore=False, bias_match=False, thresh=0.5, seen=100)
    clone = YoloV2Loss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, YoloV2Loss)
    assert int(restored.seen.numpy()) == 100 and restored.rescore is False
    layer = YoloV2Decode(anchors=ANCHORS, bounding_box_format="yxyx")
    clone = YoloV2Decode.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    raw, _, _ = random_case(10)
    np.testing.assert_allclose(clone(raw)["boxes"], layer(raw)["boxes"])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="anchors"):
        YoloV2Loss(num_classes=3, anchors=[[10, 10, 10]])
    with pytest.raises(ValueError, match="strides"):
        YoloV2Loss(num_classes=3, strides=(16, 32))
    with pytest.raises(ValueError, match="bounding_box_format"):
        YoloV2Loss(num_classes=3, bounding_box_format="cxcywh")
    with pytest.raises(ValueError, match="num_classes"):
        YoloV2Loss(num_classes=0)
    loss = YoloV2Loss(num_classes=3, anchors=ANCHORS)
    raw, boxes, labels = random_case(11)  # 4 classes, not 3
    with pytest.raises(ValueError, match="num_classes=3"):
        loss.components({"boxes": boxes, "labels": labels}, tf.constant(raw))
    with pytest.raises(GroundTruthError, match="image 0 row 0: field 'labels'"):
        loss.components({"boxes": boxes, "labels": labels + 3},
                        tf.constant(raw[..., :8]))


@pytest.mark.parametrize("darknet_compat", [False, True])
def test_zero_size_truth_raises_eagerly_and_is_masked_under_xla(darknet_compat):
    raw, boxes, labels = random_case(12)
    loss = YoloV2Loss(num_classes=4, anchors=ANCHORS,
                      darknet_compat=darknet_compat, count_seen=False)
    zero = boxes.copy()
    zero[0, 0, 2] = 0.0
    with pytest.raises(GroundTruthError, match="image 0 row 0: field 'boxes'"):
        loss({"boxes": zero, "labels": labels}, raw)
    masked = labels.copy()
    masked[0, 0] = -1  # what the compiled step must see: the row as padding

    @tf.function(jit_compile=True)
    def value_and_grad(b, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss({"boxes": b, "labels": tf.constant(labels)}, x)
        return value, tape.gradient(value, x)

    value, grad = value_and_grad(tf.constant(zero), tf.constant(raw))
    want = loss({"boxes": boxes, "labels": masked}, raw)
    assert float(value) == pytest.approx(float(want), rel=1e-6)
    assert np.all(np.isfinite(grad.numpy()))
