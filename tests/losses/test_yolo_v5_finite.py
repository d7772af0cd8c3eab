"""YoloV5Loss and YoloV5Decode stay finite on hostile raw outputs, and
invalid ground-truth rows are refused eagerly and masked when compiled
(issue #13, items 1-3)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.anchors import YOLOV5_ANCHORS
from keras_yolo.assign.groundtruth import GroundTruthError
from keras_yolo.layers import YoloV5Decode
from keras_yolo.losses import YoloV5Loss
from test_yolo_v5_dynamic import value_and_grads

STRIDES = (8, 16, 32)
NUM_CLASSES = 3
IMAGE = 32
BATCH, ROWS = 2, 6
ANCHORS = (np.asarray(YOLOV5_ANCHORS) * IMAGE / 320).tolist()
DTYPES = ("float32", "float16", "bfloat16")


def _raw(kind, seed=0):
    """Raw outputs (batch 2, 32 px) at a hostile scale."""
    rng = np.random.default_rng(seed)
    out = []
    for s in STRIDES:
        shape = (BATCH, IMAGE // s, IMAGE // s, 3, 5 + NUM_CLASSES)
        if kind == "zeros":
            p = np.zeros(shape)
        elif kind == "mixed_1e4":
            p = rng.choice([-1e4, 1e4], shape) + rng.normal(0, 1, shape)
        elif kind == "tiny_wh":
            # No box at all and one prediction at t_w = t_h = -50: a masked
            # slot used to read it and poison the box term with NaN.
            p = rng.normal(0, 1, shape)
            p[0, 0, 0, 0, 2:4] = -50.0
        else:
            p = np.full(shape, float(kind))
        out.append(p.astype(np.float32))
    return out


KINDS = ("zeros", "50", "-50", "10000", "-10000", "mixed_1e4", "tiny_wh")


def _truth(with_boxes):
    boxes = np.zeros((BATCH, ROWS, 4), np.float32)
    labels = np.full((BATCH, ROWS), -1, np.int32)
    if with_boxes:
        boxes[0, :3] = [[0.3, 0.4, 0.2, 0.3], [0.31, 0.41, 0.5, 0.4],
                        [0.9, 0.05, 0.1, 0.08]]
        labels[0, :3] = [0, 2, 1]
        boxes[1, 0] = [0.5, 0.5, 1.0, 1.0]
        labels[1, 0] = 1
    return boxes, labels


def _loss():
    return YoloV5Loss(num_classes=NUM_CLASSES, anchors=ANCHORS, fl_gamma=1.5,
                      label_smoothing=0.1, autobalance=True)


def _assert_finite(values, grads, where):
    values = [float(v) for v in values]
    assert np.all(np.isfinite(values)), (where, values)
    for g in grads:
        g = tf.cast(g, tf.float32).numpy()
        assert np.all(np.isfinite(g)), (where, "gradient")


def _hostile_batch():
    """Every hostile kind, with and without boxes, as one image pair of a
    single batch: one call (one XLA compilation) covers them all."""
    raw = [np.concatenate(level, 0)
           for level in zip(*[_raw(kind) for kind in KINDS for _ in "ab"])]
    truths = [_truth(with_boxes) for _ in KINDS for with_boxes in (1, 0)]
    boxes = np.concatenate([t[0] for t in truths], 0)
    labels = np.concatenate([t[1] for t in truths], 0)
    return boxes, labels, raw


@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_loss_and_gradients_eager(dtype):
    boxes, labels, raw = _hostile_batch()
    loss = _loss()
    values, grads = value_and_grads(loss, boxes, labels,
                          [tf.cast(r, dtype) for r in raw])
    _assert_finite(values, grads, (dtype, "eager"))
    assert np.all(np.isfinite(loss.balance_state.numpy()))


# Half-precision XLA compilations (seconds each on CPU) run with -m slow.
@pytest.mark.parametrize("dtype", [
    "float32", *(pytest.param(d, marks=pytest.mark.slow) for d in DTYPES[1:])])
def test_finite_loss_and_gradients_xla_equal_eager(dtype):
    boxes, labels, raw = _hostile_batch()
    levels = [tf.cast(r, dtype) for r in raw]
    loss, jit_loss = _loss(), _loss()
    values, _ = value_and_grads(loss, boxes, labels, levels)
    xla_values, xla_grads = tf.function(
        lambda b, l, p: value_and_grads(jit_loss, b, l, p), jit_compile=True)(
            boxes, labels, levels)
    _assert_finite(xla_values, xla_grads, (dtype, "xla"))
    np.testing.assert_allclose([float(v) for v in xla_values],
                               [float(v) for v in values], rtol=1e-4)
    np.testing.assert_allclose(jit_loss.balance_state.numpy(),
                               loss.balance_state.numpy(), rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_no_box_at_all_gives_finite_terms_at_every_scale(jit):
    loss = YoloV5Loss(num_classes=NUM_CLASSES, anchors=ANCHORS,
                      autobalance=True)
    fn = tf.function(lambda b, l, p: value_and_grads(loss, b, l, p), jit_compile=True)
    boxes, labels = _truth(False)
    for kind in ("tiny_wh", "-10000", "10000"):
        levels = [tf.constant(r) for r in _raw(kind)]
        values, grads = (fn if jit else value_and_grads)(
            *((boxes, labels, levels) if jit else (loss, boxes, labels,
                                                   levels)))
        _assert_finite(values, grads, (kind, jit))
        assert float(values[1]) == 0.0, kind  # no box term without boxes
    assert np.all(np.isfinite(loss.balance_state.numpy()))


INVALID = {
    "label_99": (0, 4, [0.5, 0.5, 0.2, 0.2], 99),
    "nan_box": (1, 3, [np.nan, 0.5, 0.2, 0.2], 1),
    "negative_size": (0, 5, [0.5, 0.5, -0.2, 0.2], 2),
}


def test_invalid_rows_are_masked_when_compiled_and_raise_eagerly():
    boxes, labels = _truth(True)
    levels = [tf.constant(r) for r in _raw("mixed_1e4")]
    bad_boxes, bad_labels = boxes.copy(), labels.copy()
    for image, row, box, label in INVALID.values():
        bad_boxes[image, row], bad_labels[image, row] = box, label
    for jit in (False, True):
        loss = YoloV5Loss(num_classes=NUM_CLASSES, anchors=ANCHORS)
        fn = tf.function(lambda b, l, p: value_and_grads(loss, b, l, p),
                         jit_compile=jit)
        clean, clean_grads = fn(boxes, labels, levels)
        dirty, dirty_grads = fn(bad_boxes, bad_labels, levels)
        assert [float(v) for v in dirty] == [float(v) for v in clean], jit
        for g, e in zip(dirty_grads, clean_grads):
            np.testing.assert_array_equal(g.numpy(), e.numpy())
    for name, (image, row, box, label) in INVALID.items():
        one_boxes, one_labels = boxes.copy(), labels.copy()
        one_boxes[image, row], one_labels[image, row] = box, label
        with pytest.raises(GroundTruthError,
                           match=f"image {image} row {row}"):
            YoloV5Loss(num_classes=NUM_CLASSES, anchors=ANCHORS)(
                {"boxes": one_boxes, "labels": one_labels}, levels)


def test_decoder_outputs_finite_for_any_raw_value():
    rng = np.random.default_rng(0)
    decode = YoloV5Decode(anchors=ANCHORS, bounding_box_format="rel_xyxy")
    xla = tf.function(decode, jit_compile=True)
    raw = []
    for s in STRIDES:
        p = rng.choice([-1e4, 1e4, 0.0, 50.0], (1, IMAGE // s, IMAGE // s, 3,
                                                 5 + NUM_CLASSES))
        p[0, 0, 0, 0, :5] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
        raw.append(p.astype(np.float32))
    for dtype in DTYPES:
        levels = [tf.cast(r, dtype) for r in raw]
        for out in (decode(levels), xla(levels)):
            for key, value in out.items():
                assert np.all(np.isfinite(value.numpy())), (dtype, key)
            # The NaN cell decodes as an empty box with zero objectness.
            assert float(out["objectness"][0, 0]) == 0.0


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_policy_keeps_the_loss_in_float32(policy):
    import keras

    boxes, labels = _truth(True)
    raw = [r * 1e-4 for r in _raw("mixed_1e4")]  # logits around +-1
    expected = float(YoloV5Loss(num_classes=NUM_CLASSES, anchors=ANCHORS)(
        {"boxes": boxes, "labels": labels}, raw))
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        loss = YoloV5Loss(num_classes=NUM_CLASSES, anchors=ANCHORS)
        half = [tf.cast(r, policy.split("_")[1]) for r in raw]
        value = loss({"boxes": boxes, "labels": labels}, half)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    # Only the raw outputs are rounded to half precision; the boxes and the
    # arithmetic stay float32.
    assert loss.dtype == "float32" and value.dtype == tf.float32
    assert float(value) == pytest.approx(expected, rel=1e-3)
