"""YoloV5Loss on the YoloLoss base: the autobalance state is a serialized
`keras.Variable` advanced once per loss evaluation (as ultralytics'
ComputeLoss does), never by `components()`; the reductions it takes."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import require_peer

from keras_yolo.anchors import YOLOV5_ANCHORS
from keras_yolo.losses import YoloV5Loss

STRIDES = (8, 16, 32)
NUM_CLASSES = 4
BATCH = 2


def _case(seed=0, image=(128, 96), num_classes=NUM_CLASSES):
    """Raw levels (objectness low, like a trained head) and padded
    rel_center_xywh truths with a few real rows per image."""
    rng = np.random.default_rng(seed)
    levels = []
    for s in STRIDES:
        p = rng.normal(0, 1.5, (BATCH, image[0] // s, image[1] // s, 3,
                                5 + num_classes)).astype(np.float32)
        p[..., 4] -= 2.0
        levels.append(p)
    boxes = np.zeros((BATCH, 6, 4), np.float32)
    labels = np.full((BATCH, 6), -1, np.int32)
    for b, n in enumerate((4, 2)):
        boxes[b, :n, :2] = rng.uniform(0.1, 0.9, (n, 2))
        boxes[b, :n, 2:] = rng.uniform(0.05, 0.6, (n, 2))
        labels[b, :n] = rng.integers(0, num_classes, n)
    return levels, boxes, labels


def _y_true(boxes, labels):
    return {"boxes": tf.constant(boxes), "labels": tf.constant(labels)}


def test_components_are_pure_and_the_call_advances_the_state_once():
    levels, boxes, labels = _case()
    y_true = _y_true(boxes, labels)
    loss = YoloV5Loss(num_classes=NUM_CLASSES, autobalance=True)
    start = loss.balance_state.numpy().copy()
    first = {k: float(v) for k, v in loss.components(y_true, levels).items()}
    again = {k: float(v) for k, v in loss.components(y_true, levels).items()}
    assert first == again
    np.testing.assert_array_equal(loss.balance_state.numpy(), start)

    total = float(loss(y_true, levels))
    # The call evaluated with the weights the components saw, then moved
    # them exactly once; evaluating again now gives a different objectness.
    assert total == pytest.approx(sum(first.values()), rel=1e-6)
    moved = loss.balance_state.numpy()
    assert not np.allclose(moved, start)
    assert moved[1] == 1.0  # divided by the stride-16 level's weight
    after = {k: float(v) for k, v in loss.components(y_true, levels).items()}
    assert after["box"] == first["box"] and after["cls"] == first["cls"]
    assert after["obj"] != first["obj"]
    np.testing.assert_array_equal(loss.balance_state.numpy(), moved)


def test_components_inside_tf_function_leave_the_state_alone():
    levels, boxes, labels = _case(1)
    loss = YoloV5Loss(num_classes=NUM_CLASSES, autobalance=True)
    start = loss.balance_state.numpy().copy()
    terms = tf.function(lambda y, p: loss.components(y, p))
    for _ in range(2):
        terms(_y_true(boxes, labels), [tf.constant(p) for p in levels])
    np.testing.assert_array_equal(loss.balance_state.numpy(), start)


@pytest.mark.parity
def test_autobalance_follows_compute_loss_with_logging_in_between():
    """Three training steps; before each the terms are logged with
    `components()` (the old loss advanced its state there, so logging
    changed the next step's loss)."""
    reference = require_peer("yolov5_reference", "(bash .ci/install_parity)")
    torch = reference.load().torch
    criterion = reference.compute_loss(
        NUM_CLASSES, YOLOV5_ANCHORS, STRIDES, reference.default_hyp(),
        autobalance=True)
    loss = YoloV5Loss(num_classes=NUM_CLASSES, autobalance=True,
                      reduction="sum")
    levels, boxes, labels = _case(2)
    y_true = _y_true(boxes, labels)
    rows = [[b, labels[b, m], *boxes[b, m]] for b in range(BATCH)
            for m in range(boxes.shape[1]) if labels[b, m] >= 0]
    targets = torch.tensor(np.asarray(rows, np.float32))
    for step in range(3):
        raw = [p + 0.2 * step for p in levels]
        loss.components(y_true, raw)
        expected, _ = criterion(
            [torch.tensor(p.transpose(0, 3, 1, 2, 4).copy()) for p in raw],
            targets)
        # reduction="sum" is ComputeLoss's `(lbox + lobj + lcls) * bs`.
        assert float(loss(y_true, raw)) == pytest.approx(float(expected),
                                                        rel=1e-5)
        np.testing.assert_allclose(loss.balance_state.numpy(),
                                   criterion.balance, rtol=1e-9)


def test_config_round_trip_keeps_the_state():
    levels, boxes, labels = _case(3)
    loss = YoloV5Loss(num_classes=NUM_CLASSES, autobalance=True,
                      fl_gamma=1.5, reduction="sum")
    for _ in range(2):
        loss(_y_true(boxes, labels), levels)
    state = loss.balance_state.numpy()
    config = loss.get_config()
    assert config["balance_state"] == pytest.approx(state.tolist(), rel=0)
    assert config["balance"] == (4.0, 1.0, 0.4)  # the configured start
    for clone in (YoloV5Loss.from_config(config),
                  keras.saving.deserialize_keras_object(
                      keras.saving.serialize_keras_object(loss))):
        assert isinstance(clone, YoloV5Loss)
        np.testing.assert_array_equal(clone.balance_state.numpy(), state)
        assert clone.get_config() == config
        # The clone continues exactly where the original is.
        y_true = _y_true(boxes, labels)
        terms = loss.components(y_true, levels)
        assert float(clone(y_true, levels)) == pytest.approx(
            float(sum(terms.values())), rel=1e-7)


def test_reductions_batch_level_only():
    levels, boxes, labels = _case(4)
    y_true = _y_true(boxes, labels)
    default = float(YoloV5Loss(num_classes=NUM_CLASSES)(y_true, levels))
    summed = float(YoloV5Loss(num_classes=NUM_CLASSES, reduction="sum")(
        y_true, levels))
    alias = float(YoloV5Loss(num_classes=NUM_CLASSES,
                             scale_by_batch_size=True)(y_true, levels))
    assert summed == pytest.approx(BATCH * default, rel=1e-6)
    assert alias == summed
    weighted = float(YoloV5Loss(num_classes=NUM_CLASSES)(
        y_true, levels, sample_weight=0.5))
    assert weighted == pytest.approx(0.5 * default, rel=1e-6)
    for reduction in ("none", "mean_with_sample_weight"):
        with pytest.raises(ValueError, match="reduction"):
            YoloV5Loss(num_classes=NUM_CLASSES, reduction=reduction)
    with pytest.raises(ValueError, match="sample_weight"):
        YoloV5Loss(num_classes=NUM_CLASSES)(y_true, levels,
                                            sample_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="scale_by_batch_size"):
        YoloV5Loss(num_classes=NUM_CLASSES, scale_by_batch_size=True,
                   reduction="mean")


def test_num_classes_is_required():
    with pytest.raises(TypeError, match="num_classes"):
        YoloV5Loss()
