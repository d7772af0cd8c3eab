"""TaskAlignedAssigner against ultralytics 8.4.190 `utils/tal.py`, and by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import require_peer

from keras_yolo import boxes as box_ops
from keras_yolo.assign.anchor_points import make_anchor_points
from keras_yolo.assign.tal import TaskAlignedAssigner

STRIDES = (8, 16, 32)


def v8_ciou(box1, box2):
    """The CIoU the assigner and the v8 loss use."""
    return box_ops.iou(box1, box2, "xyxy", "ciou", convention="ultralytics8")


def _numpy_ciou(b1, b2, eps=1e-7):
    """ultralytics 8 bbox_iou(xywh=False, CIoU=True) in float64, from its text."""
    b1, b2 = np.asarray(b1, np.float64), np.asarray(b2, np.float64)
    w1, h1 = b1[..., 2] - b1[..., 0], b1[..., 3] - b1[..., 1] + eps
    w2, h2 = b2[..., 2] - b2[..., 0], b2[..., 3] - b2[..., 1] + eps
    inter = (np.clip(np.minimum(b1[..., 2], b2[..., 2])
                     - np.maximum(b1[..., 0], b2[..., 0]), 0, None)
             * np.clip(np.minimum(b1[..., 3], b2[..., 3])
                       - np.maximum(b1[..., 1], b2[..., 1]), 0, None))
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = np.maximum(b1[..., 2], b2[..., 2]) - np.minimum(b1[..., 0], b2[..., 0])
    ch = np.maximum(b1[..., 3], b2[..., 3]) - np.minimum(b1[..., 1], b2[..., 1])
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2[..., 0] + b2[..., 2] - b1[..., 0] - b1[..., 2])**2
            + (b2[..., 1] + b2[..., 3] - b1[..., 1] - b1[..., 3])**2) / 4
    v = 4 / math.pi**2 * (np.arctan(w2 / h2) - np.arctan(w1 / h1))**2
    alpha = v / (1 - iou + v + eps)
    return iou - (rho2 / c2 + v * alpha)


def test_ciou_matches_the_formula_including_tiny_and_flat_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (200, 2))
    wh = np.exp(rng.uniform(np.log(1e-3), np.log(60), (200, 2)))
    b1 = np.concatenate([xy, xy + wh], -1)
    xy2 = xy + rng.normal(0, 5, (200, 2))
    wh2 = np.exp(rng.uniform(np.log(1e-3), np.log(60), (200, 2)))
    b2 = np.concatenate([xy2, xy2 + wh2], -1)
    b2[:5, 3] = b2[:5, 1]  # zero height: h = eps
    got = v8_ciou(tf.constant(b1, tf.float32),
                           tf.constant(b2, tf.float32)).numpy()
    want = _numpy_ciou(b1.astype(np.float32), b2.astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(
        v8_ciou(tf.constant([[0., 0., 2., 2.]]),
                         tf.constant([[0., 0., 2., 2.]])).numpy(),
        [1.0], atol=1e-6)


@pytest.mark.parity
def test_ciou_matches_ultralytics_bbox_iou_with_gradients():
    reference = require_peer("ultralytics8_reference",
                             "(bash .ci/install_parity)")
    torch = reference.load().torch
    from ultralytics.utils.metrics import bbox_iou

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 20, (500, 2))
    b1 = np.concatenate([xy, xy + np.exp(rng.uniform(-6, 3, (500, 2)))], -1)
    xy2 = xy + rng.normal(0, 2, (500, 2))
    b2 = np.concatenate([xy2, xy2 + np.exp(rng.uniform(-6, 3, (500, 2)))],
                        -1)
    b1, b2 = b1.astype(np.float32), b2.astype(np.float32)
    t1 = torch.tensor(b1, requires_grad=True)
    want = bbox_iou(t1, torch.tensor(b2), xywh=False, CIoU=True)[:, 0]
    want.sum().backward()
    x1 = tf.constant(b1)
    with tf.GradientTape() as tape:
        tape.watch(x1)
        got = v8_ciou(x1, tf.constant(b2))
        total = tf.reduce_sum(got)
    grad = tape.gradient(total, x1)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad.numpy(), t1.grad.numpy(), rtol=1e-4,
                               atol=1e-5)


def _points(image_hw):
    hw = [(image_hw[0] // s, image_hw[1] // s) for s in STRIDES]
    points, stride = make_anchor_points(hw, STRIDES)
    return (points * stride).numpy(), stride.numpy()


def _random_problem(rng, batch, image_hw, num_classes, per_image, max_boxes):
    points, stride = _points(image_hw)
    n = len(points)
    scores = 1 / (1 + np.exp(-rng.normal(-1, 2, (batch, n, num_classes))))
    # predictions: boxes around their point, a few strides wide
    half = stride * np.exp(rng.uniform(-0.5, 2.0, (batch, n, 4)))
    pred = np.concatenate([points - half[..., :2], points + half[..., 2:]],
                          -1)
    h, w = image_hw
    truths = np.zeros((batch, max_boxes, 4))
    labels = np.zeros((batch, max_boxes), np.int64)
    mask = np.zeros((batch, max_boxes), bool)
    for b, count in enumerate(per_image):
        for m in range(count):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            bw = w * np.exp(rng.uniform(np.log(0.01), np.log(0.9)))
            bh = h * np.exp(rng.uniform(np.log(0.01), np.log(0.9)))
            truths[b, m] = [max(cx - bw / 2, 0), max(cy - bh / 2, 0),
                            min(cx + bw / 2, w), min(cy + bh / 2, h)]
            labels[b, m] = rng.integers(0, num_classes)
            mask[b, m] = True
    # several truths about one centre (they share anchor points)
    if max_boxes >= per_image[0] + 3:
        for k, size in enumerate((30.0, 34.0, 60.0)):
            m = per_image[0] + k
            truths[0, m] = [50 - size / 2, 40 - size / 2,
                            50 + size / 2, 40 + size / 2]
            labels[0, m] = k % num_classes
            mask[0, m] = True
    f = np.float32
    return (scores.astype(f), pred.astype(f), points.astype(f),
            labels, truths.astype(f), mask)


def _ours(problem, num_classes):
    scores, pred, points, labels, truths, mask = problem
    assigner = TaskAlignedAssigner(num_classes)
    out = assigner(tf.constant(scores), tf.constant(pred), tf.constant(points),
                   tf.constant(labels), tf.constant(truths),
                   tf.constant(mask))
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_ultralytics_task_aligned_assigner(seed):
    reference = require_peer("ultralytics8_reference",
                             "(bash .ci/install_parity)")
    torch = reference.load().torch
    rng = np.random.default_rng(seed)
    num_classes = 4
    problem = _random_problem(rng, 3, (96, 160), num_classes, (8, 0, 15), 18)
    scores, pred, points, labels, truths, mask = problem
    ref = reference.load().tal.TaskAlignedAssigner(
        topk=10, num_classes=num_classes, alpha=0.5, beta=6.0,
        stride=list(STRIDES))
    _, r_boxes, r_scores, r_fg, r_idx = ref(
        torch.tensor(scores), torch.tensor(pred), torch.tensor(points),
        torch.tensor(labels[..., None].astype(np.float32)),
        torch.tensor(truths), torch.tensor(mask[..., None].astype(np.float32)))
    ours = _ours(problem, num_classes)
    # ultralytics' positives with a non-zero target (its top-k also keeps
    # zero-alignment ties, in torch's unspecified order, with zero targets;
    # see the module doc)
    fg = r_fg.numpy() & (r_scores.numpy().sum(-1) > 0)
    assert fg.sum() > 20
    np.testing.assert_array_equal(ours["fg_mask"], fg)
    np.testing.assert_array_equal(ours["target_index"][fg],
                                  r_idx.numpy()[fg])
    np.testing.assert_allclose(ours["target_boxes"][fg], r_boxes.numpy()[fg])
    np.testing.assert_allclose(ours["target_scores"], r_scores.numpy(),
                               rtol=1e-5, atol=1e-7)


def test_top_k_candidates_inside_the_truth_by_alignment():
    """One big truth, no conflicts: exactly the k points of largest
    p^alpha CIoU^beta among the points strictly inside it are positive, and
    the best of them gets the target score max CIoU (the normalisation)."""
    rng = np.random.default_rng(5)
    problem = _random_problem(rng, 1, (64, 64), 2, (0,), 1)
    scores, pred, points, labels, truths, mask = problem
    truths[0, 0] = [4.0, 6.0, 50.0, 60.0]
    labels[0, 0], mask[0, 0] = 1, True
    ours = _ours((scores, pred, points, labels, truths, mask), 2)
    inside = ((points[:, 0] > 4) & (points[:, 0] < 50)
              & (points[:, 1] > 6) & (points[:, 1] < 60))
    overlap = np.maximum(_numpy_ciou(truths[0, 0], pred[0]), 0)
    metric = np.where(inside, np.sqrt(scores[0, :, 1]) * overlap**6, 0)
    top = np.argsort(-metric)[:10]
    assert inside.sum() > 10
    np.testing.assert_array_equal(np.flatnonzero(ours["fg_mask"][0]),
                                  np.sort(top))
    want = metric[top] * overlap[top].max() / (metric[top].max() + 1e-9)
    np.testing.assert_allclose(ours["target_scores"][0, top, 1], want,
                               rtol=1e-4)
    assert np.all(ours["target_scores"][0, :, 0] == 0)


def test_a_point_chosen_by_two_truths_goes_to_the_higher_overlap():
    # One point at (12, 12) (stride 8 cell (1, 1)) inside two truths; its
    # prediction matches truth 1 better.
    points = np.array([[12.0, 12.0], [100.0, 100.0]], np.float32)
    pred = np.array([[[2.0, 2.0, 22.0, 22.0], [90., 90., 110., 110.]]],
                    np.float32)
    scores = np.full((1, 2, 1), 0.5, np.float32)
    truths = np.array([[[0.0, 0.0, 40.0, 40.0], [1.0, 1.0, 23.0, 23.0]]],
                      np.float32)
    labels = np.zeros((1, 2), np.int64)
    mask = np.ones((1, 2), bool)
    out = _ours((scores, pred, points, labels, truths, mask), 1)
    assert out["fg_mask"][0].tolist() == [True, False]
    assert out["target_index"][0, 0] == 1
    np.testing.assert_allclose(out["target_boxes"][0, 0], truths[0, 1])
    # its score is truth 1's own normalised metric: its only positive,
    # so max CIoU of truth 1 with its positives
    np.testing.assert_allclose(out["target_scores"][0, 0, 0],
                               _numpy_ciou(truths[0, 1], pred[0, 0]),
                               rtol=1e-5)


def test_tiny_truths_are_widened_to_the_second_stride_for_candidates():
    points = np.array([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0]], np.float32)
    pred = np.tile(np.array([[[2.0, 2.0, 18.0, 8.0]]], np.float32), (1, 3, 1))
    scores = np.full((1, 3, 1), 0.9, np.float32)
    # a 2 px truth centred at (13, 4): widened to 16 px, x in (5, 21)
    truths = np.array([[[12.0, 3.0, 14.0, 5.0]]], np.float32)
    out = _ours((scores, pred, points, np.zeros((1, 1)), truths,
                 np.ones((1, 1), bool)), 1)
    assert out["fg_mask"][0].tolist() == [False, True, True]
    # with min_size=0 no point lies inside it
    plain = TaskAlignedAssigner(1, min_size=0.0)(
        scores, pred, points, np.zeros((1, 1)), truths, np.ones((1, 1), bool))
    assert not plain["fg_mask"].numpy().any()


def test_padding_rows_and_empty_images_assign_nothing():
    rng = np.random.default_rng(1)
    problem = _random_problem(rng, 2, (64, 96), 3, (0, 0), 2)
    out = _ours(problem, 3)
    assert not out["fg_mask"].any()
    assert not out["target_scores"].any()
    # no truth rows at all
    scores, pred, points, *_ = problem
    empty = TaskAlignedAssigner(3)(scores, pred, points,
                                   np.zeros((2, 0), np.int64),
                                   np.zeros((2, 0, 4), np.float32),
                                   np.zeros((2, 0), bool))
    assert not empty["fg_mask"].numpy().any()
    assert empty["target_scores"].shape == scores.shape


def test_xla_matches_eager():
    rng = np.random.default_rng(2)
    problem = [tf.constant(x) for x in
               _random_problem(rng, 2, (96, 96), 3, (6, 9), 12)]
    assigner = TaskAlignedAssigner(3)
    eager = assigner(*problem)
    xla = tf.function(lambda *a: assigner(*a), jit_compile=True)(*problem)
    for key in eager:
        np.testing.assert_allclose(np.asarray(xla[key], np.float64),
                                   np.asarray(eager[key], np.float64),
                                   rtol=1e-5, atol=1e-7)
