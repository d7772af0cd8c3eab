"""YoloV5Loss against ultralytics yolov5 7.0.14 ComputeLoss (and by hand)."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from conftest import require_peer
from keras_yolo.anchors import YOLOV5_ANCHORS
from keras_yolo.losses import YoloV5Loss, scale_hyperparameters
from keras_yolo.losses.yolo_v5 import default_balance
from v5_cases import random_truths


STRIDES = (8, 16, 32)
LOSS_RTOL = 1e-5
GRAD_ATOL = 1e-4


def _raw(rng, batch, image_hw, num_classes, scale=1.5, bias=-2.0):
    """Random raw outputs; objectness biased low like a trained head."""
    out = []
    for s in STRIDES:
        p = rng.normal(0, scale, (batch, image_hw[0] // s, image_hw[1] // s,
                                  3, 5 + num_classes)).astype(np.float32)
        p[..., 4] += bias
        out.append(p)
    return out


# Several truths in one cell (same anchor), truths exactly on cell borders of
# every level (x * W integer), and on the image edges (0 and 1).
CRAFTED = (
    (0, (0.3031, 0.4047, 0.06, 0.05)),
    (0, (0.3033, 0.4049, 0.065, 0.052)),
    (0, (0.3036, 0.4043, 0.058, 0.049)),
    (0, (0.3034, 0.4046, 0.3, 0.25)),
    (1, (0.5, 0.25, 0.1, 0.2)),          # on a border at every level
    (1, (0.125, 0.75, 0.04, 0.03)),
    (1, (0.0, 0.6, 0.05, 0.1)),          # left edge
    (1, (1.0, 1.0, 0.2, 0.2)),           # bottom-right corner
    (1, (0.99, 0.0, 0.3, 0.01)),         # top edge, thin
    (1, (0.5, 0.5, 1.0, 1.0)),           # whole image
)


def _targets(torch, boxes, labels):
    rows = [[b, labels[b, m], *boxes[b, m]]
            for b in range(labels.shape[0]) for m in range(labels.shape[1])
            if labels[b, m] >= 0]
    return torch.tensor(np.asarray(rows, np.float32).reshape(-1, 6))


def _compare(ref_module, raw, boxes, labels, num_classes, steps=1,
             **hyper):
    """Runs ours and ComputeLoss `steps` times; returns worst differences."""
    torch = ref_module.load().torch
    gr = hyper.pop("gr", 1.0)
    sort_obj_iou = hyper.pop("sort_obj_iou", False)
    autobalance = hyper.pop("autobalance", False)
    criterion = ref_module.compute_loss(
        num_classes, YOLOV5_ANCHORS, STRIDES, ref_module.default_hyp(**hyper),
        gr=gr, sort_obj_iou=sort_obj_iou, autobalance=autobalance)
    ours = YoloV5Loss(num_classes=num_classes, gr=gr,
                      sort_obj_iou=sort_obj_iou, autobalance=autobalance,
                      **hyper)
    targets = _targets(torch, boxes, labels)
    y_true = {"boxes": tf.constant(boxes), "labels": tf.constant(labels)}
    worst_rel, worst_grad = 0.0, 0.0
    for step in range(steps):
        levels = [r + 0.1 * step for r in raw]
        torch_levels = [torch.tensor(p.transpose(0, 3, 1, 2, 4).copy(),
                                     requires_grad=True) for p in levels]
        total_ref, parts_ref = criterion(torch_levels, targets)
        total_ref.backward()
        tf_levels = [tf.constant(p) for p in levels]
        with tf.GradientTape() as tape:
            tape.watch(tf_levels)
            # One evaluation a step, as ComputeLoss: advances autobalance.
            _, parts = ours.compute_terms(y_true, tf_levels)
            total = (parts["box"] + parts["obj"] + parts["cls"]) * len(boxes)
        grads = tape.gradient(total, tf_levels)
        mine = np.array([parts["box"], parts["obj"], parts["cls"]])
        ref = parts_ref.numpy().astype(np.float64)
        rel = np.abs(mine - ref) / np.maximum(np.abs(ref), 1e-12)
        rel = np.where(ref == 0, np.abs(mine), rel)
        worst_rel = max(worst_rel, float(rel.max()),
                        abs(float(total) - float(total_ref))
                        / abs(float(total_ref)))
        for g, t in zip(grads, torch_levels):
            diff = np.abs(g.numpy().transpose(0, 3, 1, 2, 4)
                          - t.grad.numpy()).max()
            worst_grad = max(worst_grad, float(diff))
        if autobalance:
            np.testing.assert_allclose(ours.balance_state.numpy(),
                                       criterion.balance, rtol=1e-9)
    return worst_rel, worst_grad


@pytest.fixture(scope="module")
def reference():
    return require_peer("yolov5_reference", "(bash .ci/install_parity)")


CASES = {
    "defaults": {},
    "focal": dict(fl_gamma=1.5),
    "smoothing": dict(label_smoothing=0.1),
    "gr_half": dict(gr=0.5),
    "gr_zero": dict(gr=0.0),
    "sort_obj_iou": dict(sort_obj_iou=True),
    "pos_weights": dict(cls_pw=2.5, obj_pw=0.6),
    "anchor_t_gains": dict(anchor_t=2.9, box=0.0375, obj=0.7, cls=0.3),
    "everything": dict(fl_gamma=2.0, label_smoothing=0.2, gr=0.7,
                       sort_obj_iou=True, cls_pw=1.7, obj_pw=1.3,
                       anchor_t=3.5),
}


# A 640 input for the defaults and the everything-at-once case; the single
# hyperparameters on a smaller non-square input keep the suite fast.
IMAGE_HW = {"defaults": (640, 640), "everything": (640, 640)}


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_compute_loss(reference, case):
    rng = np.random.default_rng(1)
    raw = _raw(rng, 2, IMAGE_HW.get(case, (320, 224)), 80)
    boxes, labels = random_truths(rng, [9, 6], 24, 80, CRAFTED)
    rel, grad = _compare(reference, raw, boxes, labels, 80,
                         **dict(CASES[case]))
    assert rel < LOSS_RTOL, (case, rel)
    assert grad < GRAD_ATOL, (case, grad)


@pytest.mark.parity
def test_matches_compute_loss_non_square_with_empty_image(reference):
    rng = np.random.default_rng(2)
    raw = _raw(rng, 3, (256, 416), 80)
    boxes, labels = random_truths(rng, [5, 0, 7], 16, 80, CRAFTED)
    labels[1] = -1  # the middle image has no truths at all
    boxes[1] = rng.uniform(0, 1, boxes[1].shape)  # padded rows: ignored
    rel, grad = _compare(reference, raw, boxes, labels, 80, fl_gamma=1.0,
                         label_smoothing=0.05)
    assert rel < LOSS_RTOL and grad < GRAD_ATOL, (rel, grad)


@pytest.mark.parity
def test_matches_compute_loss_without_any_truth(reference):
    rng = np.random.default_rng(3)
    raw = _raw(rng, 2, (128, 192), 80)
    boxes = np.zeros((2, 4, 4), np.float32)
    labels = np.full((2, 4), -1, np.int32)
    rel, grad = _compare(reference, raw, boxes, labels, 80)
    assert rel < LOSS_RTOL and grad < GRAD_ATOL, (rel, grad)


@pytest.mark.parity
def test_matches_compute_loss_one_class(reference):
    rng = np.random.default_rng(4)
    raw = _raw(rng, 2, (192, 160), 1)
    boxes, labels = random_truths(rng, [4, 3], 8, 1, CRAFTED[:4])
    rel, grad = _compare(reference, raw, boxes, labels, 1)
    assert rel < LOSS_RTOL and grad < GRAD_ATOL, (rel, grad)


@pytest.mark.parity
def test_autobalance_follows_compute_loss_over_steps(reference):
    rng = np.random.default_rng(5)
    raw = _raw(rng, 2, (256, 256), 80)
    boxes, labels = random_truths(rng, [6, 4], 16, 80, CRAFTED)
    rel, grad = _compare(reference, raw, boxes, labels, 80, steps=4,
                         autobalance=True)
    assert rel < LOSS_RTOL and grad < GRAD_ATOL, (rel, grad)


@pytest.mark.parity
def test_several_truths_in_one_cell_keep_ultralytics_winner(reference):
    """Four truths on one anchor of one cell: the objectness target is the
    last one's IoU (or the highest with sort_obj_iou), as tobj[...] = iou."""
    rng = np.random.default_rng(6)
    raw = _raw(rng, 2, (128, 128), 5, bias=0.0)
    crafted = [(0, c[1]) for c in CRAFTED[:3]] + [(1, c[1])
                                                   for c in CRAFTED[:3]]
    boxes, labels = random_truths(rng, [0, 0], 4, 5, crafted)
    for sort in (False, True):
        rel, grad = _compare(reference, raw, boxes, labels, 5,
                             sort_obj_iou=sort, gr=0.8)
        assert rel < LOSS_RTOL and grad < GRAD_ATOL, (sort, rel, grad)


def _simple_inputs(batch=2, image_hw=(64, 96), num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    raw = _raw(rng, batch, image_hw, num_classes)
    boxes, labels = random_truths(rng, [3] * batch, 8, num_classes, CRAFTED[:4])
    return raw, {"boxes": tf.constant(boxes), "labels": tf.constant(labels)}


def test_total_is_sum_of_components_and_batch_scaling():
    raw, y_true = _simple_inputs()
    loss = YoloV5Loss(num_classes=3)
    parts = loss.components(y_true, raw)
    total = float(loss(y_true, raw))
    assert total == pytest.approx(sum(float(v) for v in parts.values()),
                                  rel=1e-6)
    scaled = YoloV5Loss(num_classes=3, scale_by_batch_size=True)
    assert float(scaled(y_true, raw)) == pytest.approx(2 * total, rel=1e-6)
    assert set(parts) == {"box", "obj", "cls"}


def test_pixel_formats_give_the_same_loss():
    raw, y_true = _simple_inputs()
    image_shape = (64, 96)
    from keras_yolo import boxes as box_ops

    xyxy = box_ops.convert(y_true["boxes"], "rel_center_xywh", "xyxy",
                           image_shape)
    rel = YoloV5Loss(num_classes=3)(y_true, raw)
    pix = YoloV5Loss(num_classes=3, bounding_box_format="xyxy")(
        {"boxes": xyxy, "labels": y_true["labels"]}, raw)
    assert float(pix) == pytest.approx(float(rel), rel=1e-5)


def test_jit_compile_matches_eager_and_updates_autobalance():
    # Two levels keep XLA's compile time (seconds on CPU) in the budget.
    raw, y_true = _simple_inputs(image_hw=(64, 64))
    raw = raw[1:]
    config = dict(num_classes=3, anchors=YOLOV5_ANCHORS[1:], strides=(16, 32),
                  autobalance=True, fl_gamma=1.5, balance=(1.0, 0.4))
    eager_loss = YoloV5Loss(**config)
    jit_loss = YoloV5Loss(**config)

    @tf.function(jit_compile=True)
    def step(levels):
        with tf.GradientTape() as tape:
            tape.watch(levels)
            value = jit_loss(y_true, levels)
        return value, tape.gradient(value, levels)

    levels = [tf.constant(r) for r in raw]
    for _ in range(2):
        value, grads = step(levels)
        with tf.GradientTape() as tape:
            tape.watch(levels)
            expected = eager_loss(y_true, levels)
        expected_grads = tape.gradient(expected, levels)
        assert float(value) == pytest.approx(float(expected), rel=1e-5)
        for g, e in zip(grads, expected_grads):
            np.testing.assert_allclose(g.numpy(), e.numpy(), atol=1e-6)
    np.testing.assert_allclose(jit_loss.balance_state.numpy(),
                               eager_loss.balance_state.numpy(), rtol=1e-6)
    assert not np.allclose(jit_loss.balance_state.numpy(), (1.0, 0.4))


def test_get_config_round_trip():
    loss = YoloV5Loss(num_classes=7, fl_gamma=1.0, gr=0.3, anchor_t=3.0,
                      balance=(2.0, 1.0, 0.5), sort_obj_iou=True,
                      bounding_box_format="xyxy", scale_by_batch_size=True)
    config = loss.get_config()
    clone = YoloV5Loss.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, YoloV5Loss)
    assert restored.get_config() == config


def test_float16_outputs_give_finite_loss_and_gradients():
    raw, y_true = _simple_inputs()
    levels = [tf.constant(r, tf.float16) for r in raw]
    with tf.GradientTape() as tape:
        tape.watch(levels)
        value = YoloV5Loss(num_classes=3)(y_true, levels)
    assert np.isfinite(float(value))
    for g in tape.gradient(value, levels):
        assert np.all(np.isfinite(g.numpy()))


def test_scale_hyperparameters_as_train_py():
    got = scale_hyperparameters(num_levels=3, num_classes=3, image_size=320)
    assert got["box"] == pytest.approx(0.05)
    assert got["cls"] == pytest.approx(0.5 * 3 / 80)
    assert got["obj"] == pytest.approx(0.25)
    got = scale_hyperparameters(box=0.1, obj=2.0, cls=1.0, num_levels=4,
                                num_classes=160, image_size=1280)
    assert got == pytest.approx({"box": 0.075, "cls": 1.5, "obj": 6.0})


def test_default_balance_per_level_count():
    assert default_balance(3) == (4.0, 1.0, 0.4)
    assert default_balance(4) == (4.0, 1.0, 0.25, 0.06)
    assert default_balance(5) == (4.0, 1.0, 0.25, 0.06, 0.02)


@pytest.mark.parametrize("kwargs, word", [
    (dict(gr=1.5), "gr"),
    (dict(anchor_t=0.0), "anchor_t"),
    (dict(balance=(1.0, 2.0)), "balance"),
    (dict(strides=(8, 32, 64), autobalance=True), "autobalance"),
    (dict(bounding_box_format="cxcywh"), "bounding_box_format"),
    (dict(num_classes=0), "num_classes"),
])
def test_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        YoloV5Loss(**{"num_classes": 3, **kwargs})


def test_wrong_channel_count_is_named():
    raw, y_true = _simple_inputs(num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        YoloV5Loss(num_classes=4)(y_true, raw)
