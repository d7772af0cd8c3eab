"""YoloV3Loss: the seed's objective in float64 numpy, hand cases, darknet parity."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import require_file, require_peer
from keras_yolo import boxes as box_ops
from keras_yolo.assign.groundtruth import GroundTruthError
from keras_yolo.layers import YoloV3Decode
from keras_yolo.losses import YoloV3Loss
from v3_cases import (GRIDS, IMAGE, SMALL_ANCHORS, STRIDES, plant_predictions, random_case, seed_loss_np)


def loss_and_grads(loss, boxes, labels, raw):
    variables = [tf.Variable(r) for r in raw]
    with tf.GradientTape() as tape:
        parts = loss.components({"boxes": boxes, "labels": labels}, variables)
        total = tf.add_n(list(parts.values()))
    grads = tape.gradient(total, variables)
    return ({k: float(v) for k, v in parts.items()}, float(total),
            [g.numpy() for g in grads])


# --- default mode: the seed's formula -------------------------------------

def test_one_truth_by_hand():
    """One 16 x 16 px truth matching anchor (16, 16) exactly, all outputs 0.

    Anchor (16, 16) is level 1's first: cell (row 2, col 1) of the 4 x 4 grid,
    offsets 0.2 -> t_x = t_y = logit(0.2) = -ln 4, t_w = t_h = ln(16/16) = 0;
    box = (2 - 1/16) 2 (ln 4)^2. With zero logits every BCE is ln 2: 252 slots
    of objectness (none ignored: no anchor box overlaps the truth by > 0.5)
    and 2 class scores.
    """
    anchors = [[(4, 4), (8, 8), (8, 4)], [(16, 16), (16, 32), (32, 16)],
               [(32, 32), (64, 64), (48, 48)]]
    loss = YoloV3Loss(num_classes=2, anchors=anchors)
    raw = [np.zeros((1, g, g, 3, 7), np.float32) for g in GRIDS]
    y_true = {"boxes": np.array([[[0.3, 0.55, 0.25, 0.25]]], np.float32),
              "labels": np.array([[1]], np.int32)}
    parts = loss.components(y_true, raw)
    assert float(parts["box"]) == pytest.approx(1.9375 * 2 * math.log(4) ** 2, rel=1e-5)
    assert float(parts["obj"]) == pytest.approx(252 * math.log(2), rel=1e-5)
    assert float(parts["cls"]) == pytest.approx(2 * math.log(2), rel=1e-5)
    assert float(loss(y_true, raw)) == pytest.approx(
        1.9375 * 2 * math.log(4) ** 2 + 254 * math.log(2), rel=1e-5)
    # darknet's form: (2 - wh) [BCE(0.2, logistic(0)) x 2 + 0]
    dark = YoloV3Loss(num_classes=2, anchors=anchors, darknet_compat=True)
    assert float(dark.components(y_true, raw)["box"]) == pytest.approx(
        1.9375 * 2 * math.log(2), rel=1e-5)


def test_anchor_gate_drops_coordinates_of_a_poorly_matched_prior():
    """A 16 x 2 px truth: best anchor (8, 4) overlaps it by 16/48 = 1/3 < 0.5."""
    anchors = [[(4, 4), (8, 8), (8, 4)], [(16, 16), (16, 32), (32, 16)],
               [(32, 32), (64, 64), (48, 48)]]
    raw = [np.zeros((1, g, g, 3, 6), np.float32) for g in GRIDS]
    y_true = {"boxes": np.array([[[0.5, 0.5, 0.25, 2 / 64]]], np.float32),
              "labels": np.array([[0]], np.int32)}
    gated = YoloV3Loss(num_classes=1, anchors=anchors)
    ungated = YoloV3Loss(num_classes=1, anchors=anchors, coord_iou_gate=None)
    assert float(gated.components(y_true, raw)["box"]) == 0.0
    # offsets 0 -> clipped to 1e-3; t_w = ln 2, t_h = ln 0.5
    t = math.log(1e-3 / (1 - 1e-3))
    expected = (2 - 0.25 * 2 / 64) * (2 * t * t + 2 * math.log(2) ** 2)
    assert float(ungated.components(y_true, raw)["box"]) == pytest.approx(
        expected, rel=1e-5)


@pytest.mark.parametrize("gate, seed", [("anchor", 0), ("prediction", 1),
                                        (None, 2)])
def test_seed_formula_matches_numpy_float64(gate, seed):
    raw, boxes, labels = random_case(seed, spread=0.7, num_truths=12,
                                     anchor_sized=gate == "prediction")
    # Two truths on one slot (same centre, near-same size): last box wins,
    # classes accumulate.
    boxes[0, 1] = boxes[0, 0] * np.array([1, 1, 1.02, 1.02], np.float32)
    labels[0, :2] = [0, 2]
    if gate == "prediction":
        # Predictions near their truths, so the gate opens for some.
        raw = [r * 0.1 for r in raw]
    raw = plant_predictions(raw, boxes, labels)
    kwargs = dict(lambda_coord=2.0, lambda_obj=0.7, lambda_class=1.3,
                  ignore_thresh=0.4)
    loss = YoloV3Loss(num_classes=3, anchors=SMALL_ANCHORS,
                      coord_iou_gate=gate, **kwargs)
    parts, total, grads = loss_and_grads(loss, boxes, labels, raw)
    want, want_grads, counts = seed_loss_np(raw, boxes, labels, SMALL_ANCHORS,
                                            3, gate=gate, **kwargs)
    for key in ("box", "obj", "cls"):
        assert parts[key] == pytest.approx(want[key], rel=2e-5, abs=1e-5), key
    assert total == pytest.approx(sum(want.values()), rel=2e-5)
    for level, (g, w) in enumerate(zip(grads, want_grads)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-5,
                                   err_msg=f"level {level}")
    assert counts[0] > 0  # some coordinate terms are counted
    if gate is not None:
        assert counts[1] > 0  # and the gate closes for some
    assert counts[2] > 0  # some predictions are ignored


def test_pixel_format_gives_the_same_loss():
    raw, boxes, labels = random_case(3)
    rel = YoloV3Loss(num_classes=3, anchors=SMALL_ANCHORS)
    pix = YoloV3Loss(num_classes=3, anchors=SMALL_ANCHORS,
                     bounding_box_format="xyxy")
    xyxy = box_ops.convert(boxes, "rel_center_xywh", "xyxy",
                           image_shape=(IMAGE, IMAGE)).numpy()
    a = float(rel({"boxes": boxes, "labels": labels}, raw))
    b = float(pix({"boxes": xyxy, "labels": labels}, raw))
    assert a == pytest.approx(b, rel=1e-5)


def test_reduction_sum_is_batch_times_the_default():
    raw, boxes, labels = random_case(4, batch=3)
    y_true = {"boxes": boxes, "labels": labels}
    mean = float(YoloV3Loss(3, anchors=SMALL_ANCHORS)(y_true, raw))
    total = float(YoloV3Loss(3, anchors=SMALL_ANCHORS, reduction="sum")(
        y_true, raw))
    assert total == pytest.approx(3 * mean, rel=1e-6)


def test_float16_outputs_give_finite_loss_and_gradients():
    raw, boxes, labels = random_case(5)
    variables = [tf.Variable(r.astype(np.float16)) for r in raw]
    loss = YoloV3Loss(num_classes=3, anchors=SMALL_ANCHORS)
    with tf.GradientTape() as tape:
        value = loss({"boxes": boxes, "labels": labels}, variables)
    grads = tape.gradient(value, variables)
    assert np.isfinite(float(value))
    assert all(np.isfinite(g.numpy().astype(np.float32)).all() for g in grads)


def test_sub_pixel_truth_gives_finite_loss():
    raw, boxes, labels = random_case(6)
    boxes[0, 0, 2:] = 1e-6  # 1e-9 rounds to an empty box in float32
    loss = YoloV3Loss(num_classes=3, anchors=SMALL_ANCHORS, coord_iou_gate=None)
    _, total, grads = loss_and_grads(loss, boxes, labels, raw)
    assert np.isfinite(total) and all(np.isfinite(g).all() for g in grads)


def test_zero_size_truth_is_refused_eagerly_and_masked_when_compiled():
    raw, boxes, labels = random_case(6)
    loss = YoloV3Loss(num_classes=3, anchors=SMALL_ANCHORS, coord_iou_gate=None)
    clean = float(loss({"boxes": boxes, "labels": labels}, raw))
    dirty = boxes.copy()
    dirty[0, 0, 2:] = 0.0
    with pytest.raises(GroundTruthError, match="image 0 row 0"):
        loss({"boxes": dirty, "labels": labels}, raw)
    compiled = tf.function(lambda y, p: loss(y, p), jit_compile=True)
    padded = labels.copy()
    padded[0, 0] = -1  # the masked row is padding: same loss as without it
    want = float(loss({"boxes": boxes, "labels": padded}, raw))
    got = float(compiled({"boxes": dirty, "labels": labels}, raw))
    assert got == pytest.approx(want, rel=1e-6) and want != clean


# --- darknet_compat: pjreddie darknet's [yolo] layer ----------------------

def darknet_reference():
    require_file("/usr/lib/darknet/libdarknet.so",
                 "(Debian package `darknet`, .ci/install_parity)")
    return require_peer("darknet_v3_reference", "(tests/darknet/yolo_harness.c)")


def assert_matches_darknet(raw, boxes, labels, anchors, masks, strides,
                           num_classes, **kwargs):
    ref = darknet_reference()
    loss = YoloV3Loss(num_classes, anchors=anchors, masks=masks,
                      strides=strides, darknet_compat=True, reduction="sum",
                      **kwargs)
    _, _, grads = loss_and_grads(loss, boxes, labels, raw)
    flat = np.asarray(anchors, np.float32).reshape(-1, 2)
    masks = masks or [list(range(3 * l, 3 * l + 3)) for l in range(3)]
    _, deltas = ref.yolo_deltas(raw, boxes, labels, flat, masks, strides,
                                num_classes, **kwargs)
    for level, (g, delta) in enumerate(zip(grads, deltas)):
        # -dL/d(raw) = darknet's delta (reduction="sum").
        np.testing.assert_allclose(-g, delta, rtol=0, atol=1e-4,
                                   err_msg=f"level {level}")
    return deltas


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_darknet_compat_matches_libdarknet(seed):
    """Several truths per image, each learned on one level only."""
    raw, boxes, labels = random_case(seed, batch=3, num_truths=10,
                                     num_classes=4, spread=0.4,
                                     anchor_sized=True)
    boxes[0, 1] = boxes[0, 0] * np.array([1, 1, 1.03, 1.03], np.float32)
    raw = plant_predictions(raw, boxes, labels)
    deltas = assert_matches_darknet(raw, boxes, labels, SMALL_ANCHORS, None,
                                    STRIDES, 4)
    # Each level has responsible slots (obj delta 1 - p > 0) ...
    positives = [int((d[..., 4] > 0).sum()) for d in deltas]
    assert all(p > 0 for p in positives), positives
    # ... and each truth is learned on exactly one level: truths whose best
    # anchor is on another level leave a level alone.
    assert sum(positives) <= int((labels >= 0).sum())
    # The ignore rule fired somewhere (obj delta exactly 0 off the truths).
    assert any(int((d[..., 4] == 0).sum()) > 0 for d in deltas)


def test_darknet_compat_truth_thresh_and_ignore_thresh():
    """truth_thresh < 1 makes well-overlapping predictions responsible too."""
    raw, boxes, labels = random_case(13, batch=2, num_truths=8, spread=0.4)
    raw = plant_predictions(raw, boxes, labels)
    deltas = assert_matches_darknet(raw, boxes, labels, SMALL_ANCHORS, None,
                                    STRIDES, 3, ignore_thresh=0.3,
                                    truth_thresh=0.45)
    positives = sum(int((d[..., 4] > 0).sum()) for d in deltas)
    assert positives > int((labels >= 0).sum())


def test_darknet_compat_masks_over_a_shared_anchor_list():
    """yolov3-tiny style: two levels, six anchors, overlapping masks."""
    anchors = (np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169],
                         [344, 319]], np.float32) / 6.5).tolist()
    masks = [[1, 2, 3], [3, 4, 5]]
    raw, boxes, labels = random_case(14, batch=2, num_truths=8,
                                     grids=(4, 2), spread=0.6)
    assert_matches_darknet(raw, boxes, labels, anchors, masks, (16, 32), 3)


def test_darknet_compat_default_reduction_is_delta_over_batch():
    ref = darknet_reference()
    raw, boxes, labels = random_case(15, batch=2)
    loss = YoloV3Loss(3, anchors=SMALL_ANCHORS, darknet_compat=True)
    _, _, grads = loss_and_grads(loss, boxes, labels, raw)
    flat = np.asarray(SMALL_ANCHORS, np.float32).reshape(-1, 2)
    _, deltas = ref.yolo_deltas(raw, boxes, labels, flat,
                                [[0, 1, 2], [3, 4, 5], [6, 7, 8]], STRIDES, 3)
    for g, delta in zip(grads, deltas):
        np.testing.assert_allclose(-2 * g, delta, atol=1e-4)


# --- serving, compiling, serialising, errors -------------------------------

def test_jit_compile_matches_eager():
    """Both modes in one XLA compile (compiling is slow on 2 cores)."""
    raw, boxes, labels = random_case(30)
    losses = [YoloV3Loss(num_classes=3, anchors=SMALL_ANCHORS,
                         coord_iou_gate="prediction", truth_thresh=0.7),
              YoloV3Loss(num_classes=3, anchors=SMALL_ANCHORS,
                         darknet_compat=True)]

    @tf.function(jit_compile=True)
    def step(b, l, r0, r1, r2):
        out = []
        for loss in losses:
            with tf.GradientTape() as tape:
                tape.watch([r0, r1, r2])
                value = loss({"boxes": b, "labels": l}, [r0, r1, r2])
            out.append((value, tape.gradient(value, [r0, r1, r2])))
        return out

    results = step(boxes, labels, *[tf.constant(r) for r in raw])
    for loss, (value, grads) in zip(losses, results):
        _, want, want_grads = loss_and_grads(loss, boxes, labels, raw)
        assert float(value) == pytest.approx(want, rel=1e-5)
        for g, w in zip(grads, want_grads):
            np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-6)


def test_get_config_round_trip():
    loss = YoloV3Loss(num_classes=5, anchors=SMALL_ANCHORS, masks=None,
                      lambda_coord=3.0, lambda_obj=0.5, lambda_class=2.0,
                      ignore_thresh=0.6, truth_thresh=0.9,
                      coord_iou_gate="prediction", coord_iou_thresh=0.4,
                      bounding_box_format="xyxy", darknet_compat=True,
                      reduction="sum")
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert isinstance(clone, YoloV3Loss)
    assert clone.get_config() == loss.get_config()
    masked = YoloV3Loss(num_classes=2, anchors=np.reshape(SMALL_ANCHORS, (9, 2)),
                        masks=[[0, 1], [2, 3, 4], [5, 6, 7, 8]])
    assert YoloV3Loss.from_config(masked.get_config()).masks == masked.masks
    decode = YoloV3Decode(anchors=SMALL_ANCHORS, bounding_box_format="xyxy",
                          name="dec")
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(decode))
    assert clone.get_config() == decode.get_config()
    raw, _, _ = random_case(31, num_classes=2)
    np.testing.assert_allclose(clone(raw)["boxes"], decode(raw)["boxes"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=3, coord_iou_gate="box"), "coord_iou_gate"),
    (dict(num_classes=3, ignore_thresh=1.5), "ignore_thresh"),
    (dict(num_classes=3, lambda_obj=-1), "lambda_obj"),
    (dict(num_classes=3, masks=[[0, 1, 9], [3], [4]]), "masks"),
    (dict(num_classes=3, anchors=[[1, 2]] * 9), "anchors"),
    (dict(num_classes=3, bounding_box_format="cxcywh"), "bounding_box_format"),
    (dict(num_classes=3, reduction="max"), "reduction"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        YoloV3Loss(**kwargs)


def test_bad_inputs_are_named():
    loss = YoloV3Loss(num_classes=3, anchors=SMALL_ANCHORS)
    raw, boxes, labels = random_case(32)
    y_true = {"boxes": boxes, "labels": labels}
    with pytest.raises(ValueError, match="list of 3 levels"):
        loss(y_true, raw[:2])
    with pytest.raises(ValueError, match=r"y_pred\[1\]"):
        loss(y_true, [raw[0], raw[1][..., :6], raw[2]])
    with pytest.raises(ValueError, match="y_true"):
        loss(boxes, raw)
