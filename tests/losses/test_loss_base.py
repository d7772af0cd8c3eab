"""The `YoloLoss` contract, on two small subclasses checked against numpy.

`PerImageLoss`: per-image terms (as v1-v4). `BatchLoss`: batch-level terms
with a state variable (as v5's autobalance): each call adds the batch size
to `count`, the terms scale by the count they were evaluated with.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.assign.groundtruth import GroundTruthError
from keras_yolo.losses.base import YoloLoss

C = 3


class PerImageLoss(YoloLoss):
    strides = (8,)

    def terms(self, truth, levels):
        raw = levels[0]                                     # (B, H, W, A, 5+C)
        area = truth.boxes[..., 2] * truth.boxes[..., 3]    # (B, M)
        return {
            "box": tf.reduce_sum(tf.where(truth.valid, area, 0.0), 1)
            * tf.reduce_mean(tf.square(raw[..., 0:4]), [1, 2, 3, 4]),
            "obj": tf.reduce_sum(tf.nn.softplus(raw[..., 4]), [1, 2, 3]),
            "cls": tf.reduce_sum(tf.cast(truth.labels, tf.float32)
                                 * tf.cast(truth.valid, tf.float32), 1),
        }


class BatchLoss(YoloLoss):
    per_image = False
    strides = (8,)

    def __init__(self, num_classes, count=0, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.count = keras.Variable(float(count), trainable=False,
                                    name="count")

    def terms(self, truth, levels):
        raw = levels[0]
        batch = tf.cast(tf.shape(raw)[0], tf.float32)
        scale = 1.0 + self.count / 100.0
        obj = tf.reduce_mean(tf.nn.softplus(raw[..., 4]))
        positives = tf.maximum(tf.reduce_sum(tf.cast(truth.valid, tf.float32)),
                               1.0)
        box = tf.reduce_sum(tf.where(truth.valid, truth.boxes[..., 2], 0.0))
        return {"box": scale * box / positives, "obj": scale * obj}, batch

    def advance_state(self, truth, levels, aux):
        self.count.assign_add(aux)

    def get_config(self):
        return dict(super().get_config(), count=float(self.count.numpy()))


def case(seed=0, batch=3, boxes=4):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(batch, 2, 2, 2, 5 + C)).astype(np.float32)
    xy = rng.uniform(0.2, 0.8, (batch, boxes, 2))
    wh = rng.uniform(0.05, 0.3, (batch, boxes, 2))
    labels = rng.integers(0, C, (batch, boxes)).astype(np.int32)
    labels[0, -1] = -1
    labels[-1, :] = -1
    return raw, np.concatenate([xy, wh], -1).astype(np.float32), labels


def per_image_np(raw, boxes, labels):
    """PerImageLoss's per-image total in float64."""
    valid = labels >= 0
    raw = raw.astype(np.float64)
    area = np.where(valid, boxes[..., 2] * boxes[..., 3], 0.0).sum(1)
    box = area * np.mean(raw[..., 0:4] ** 2, axis=(1, 2, 3, 4))
    obj = np.log1p(np.exp(raw[..., 4])).sum(axis=(1, 2, 3))
    cls = np.where(valid, labels, 0).sum(1)
    return box + obj + cls


def y(boxes, labels):
    return {"boxes": tf.convert_to_tensor(boxes),
            "labels": tf.convert_to_tensor(labels)}


# --- reduction and sample_weight ----------------------------------------------

def test_reductions_follow_keras_on_per_image_values():
    raw, boxes, labels = case()
    ref = per_image_np(raw, boxes, labels)
    none = PerImageLoss(C, reduction="none")(y(boxes, labels), raw)
    assert none.shape == (3,)
    np.testing.assert_allclose(none, ref, rtol=1e-5)
    mean = float(PerImageLoss(C)(y(boxes, labels), raw))
    assert mean == pytest.approx(ref.mean(), rel=1e-5)
    assert float(PerImageLoss(C, reduction="mean")(y(boxes, labels), raw)) \
        == pytest.approx(mean, rel=1e-6)
    total = float(PerImageLoss(C, reduction="sum")(y(boxes, labels), raw))
    assert total == pytest.approx(3 * mean, rel=1e-5)
    assert float(PerImageLoss(C, reduction=None)(y(boxes, labels), raw)[1]) \
        == pytest.approx(ref[1], rel=1e-5)


def test_sample_weight_weights_each_image():
    raw, boxes, labels = case(1)
    ref = per_image_np(raw, boxes, labels)
    w = np.array([0.5, 2.0, 0.0], np.float32)
    got = PerImageLoss(C)(y(boxes, labels), raw, sample_weight=w)
    assert float(got) == pytest.approx((w * ref).sum() / 3, rel=1e-5)
    got = PerImageLoss(C, reduction="none")(y(boxes, labels), raw,
                                            sample_weight=w[:, None])
    np.testing.assert_allclose(got, w * ref, rtol=1e-5)
    got = PerImageLoss(C, reduction="mean_with_sample_weight")(
        y(boxes, labels), raw, sample_weight=w)
    assert float(got) == pytest.approx((w * ref).sum() / w.sum(), rel=1e-5)
    got = PerImageLoss(C, reduction="sum")(y(boxes, labels), raw,
                                           sample_weight=2.0)
    assert float(got) == pytest.approx(2 * ref.sum(), rel=1e-5)
    with pytest.raises(ValueError, match="sample_weight"):
        PerImageLoss(C)(y(boxes, labels), raw, sample_weight=np.ones((3, 2)))
    with pytest.raises(ValueError, match="sample_weight"):
        PerImageLoss(C)(y(boxes, labels), raw, sample_weight=np.ones(4))


def test_batch_level_loss_refuses_what_it_cannot_honour():
    for reduction in ("none", None, "mean_with_sample_weight"):
        with pytest.raises(ValueError, match="reduction"):
            BatchLoss(C, reduction=reduction)
    with pytest.raises(ValueError, match="reduction"):
        PerImageLoss(C, reduction="max")
    raw, boxes, labels = case(2)
    loss = BatchLoss(C, count=0)
    with pytest.raises(ValueError, match="sample_weight"):
        loss(y(boxes, labels), raw, sample_weight=np.ones(3, np.float32))
    base = float(BatchLoss(C)(y(boxes, labels), raw))
    summed = float(BatchLoss(C, reduction="sum")(y(boxes, labels), raw))
    assert summed == pytest.approx(3 * base, rel=1e-6)
    scaled = float(BatchLoss(C)(y(boxes, labels), raw, sample_weight=0.5))
    assert scaled == pytest.approx(0.5 * base, rel=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        PerImageLoss(0)
    with pytest.raises(ValueError, match="num_classes"):
        PerImageLoss(2.0)
    with pytest.raises(ValueError, match="num_classes"):
        PerImageLoss(True)
    with pytest.raises(ValueError, match="bounding_box_format"):
        PerImageLoss(C, bounding_box_format="cxcywh")
    assert PerImageLoss(np.int64(3)).num_classes == 3
    raw, boxes, labels = case(3)
    with pytest.raises(ValueError, match="y_true"):
        PerImageLoss(C)(boxes, raw)
    with pytest.raises(ValueError, match="y_pred"):
        PerImageLoss(C)(y(boxes, labels), [raw, raw])


# --- terms, state ------------------------------------------------------------------

def test_compute_terms_is_the_call_and_its_terms_sum_to_it():
    raw, boxes, labels = case(4)
    for reduction in ("sum_over_batch_size", "sum", "none"):
        loss = PerImageLoss(C, reduction=reduction)
        total, terms = loss.compute_terms(y(boxes, labels), raw)
        np.testing.assert_array_equal(total, loss(y(boxes, labels), raw))
        np.testing.assert_allclose(sum(terms.values()), total, rtol=1e-6)
        assert set(terms) == {"box", "obj", "cls"}
        parts = loss.components(y(boxes, labels), raw)
        for key in terms:
            np.testing.assert_array_equal(parts[key], terms[key])


def test_state_advances_once_per_call_and_never_in_components():
    raw, boxes, labels = case(5)
    loss = BatchLoss(C, count=10)
    before = loss.components(y(boxes, labels), raw)
    loss.components(y(boxes, labels), raw)
    assert float(loss.count.numpy()) == 10
    total, terms = loss.compute_terms(y(boxes, labels), raw)
    assert float(loss.count.numpy()) == 13
    # The evaluation used the state before the advance, as components did.
    for key in terms:
        assert float(terms[key]) == pytest.approx(float(before[key]), rel=1e-6)
    first = float(loss(y(boxes, labels), raw))
    assert float(loss.count.numpy()) == 16
    assert first == pytest.approx(float(total) * 1.13 / 1.10, rel=1e-5)
    step = tf.function(lambda b, l, r: loss(y(b, l), r), jit_compile=True)
    step(boxes, labels, raw)
    step(boxes, labels, raw)
    assert float(loss.count.numpy()) == 22


def test_invalid_rows_raise_eagerly_are_masked_and_counted_compiled():
    raw, boxes, labels = case(6)
    bad_boxes, bad_labels = boxes.copy(), labels.copy()
    bad_labels[0, -1] = 7                      # label out of range
    bad_boxes[1, 0] = np.nan                   # NaN box
    bad_boxes[2, 1] = [0.5, 0.5, -0.1, 0.2]    # negative size
    bad_labels[2, 1] = 0
    masked_labels = labels.copy()
    masked_labels[1, 0] = -1
    loss = PerImageLoss(C, reduction="none")
    with pytest.raises(GroundTruthError):
        loss(y(bad_boxes, bad_labels), raw)

    @tf.function(jit_compile=True)
    def run(b, l, r):
        return loss.compute_terms(y(b, l), r, return_invalid_count=True)

    total, _, count = run(bad_boxes, bad_labels, raw)
    assert float(count) == 3
    np.testing.assert_allclose(total, per_image_np(raw, boxes, masked_labels),
                               rtol=1e-5)
    _, _, count = loss.compute_terms(y(boxes, labels), raw,
                                     return_invalid_count=True)
    assert float(count) == 0


def test_pixel_boxes_use_the_image_size_of_the_levels():
    raw, boxes, labels = case(7)
    image = 2 * PerImageLoss.strides[0]                  # grid 2 x stride 8
    xyxy = np.concatenate([boxes[..., :2] - boxes[..., 2:] / 2,
                           boxes[..., :2] + boxes[..., 2:] / 2], -1) * image
    ref = PerImageLoss(C, reduction="none")(y(boxes, labels), raw)
    got = PerImageLoss(C, bounding_box_format="xyxy", reduction="none")(
        y(xyxy.astype(np.float32), labels), raw)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


# --- Keras contract --------------------------------------------------------------

def test_config_round_trip_keeps_state_and_reduction():
    keras.saving.register_keras_serializable("keras_yolo_tests")(BatchLoss)
    loss = BatchLoss(C, count=4, reduction="sum", bounding_box_format="center_xywh",
                     name="toy")
    raw, boxes, labels = case(8)
    loss(y(boxes * 16, labels), raw)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, BatchLoss)
    assert restored.get_config() == loss.get_config()
    assert float(restored.count.numpy()) == 7
    assert restored.reduction == "sum" and restored.name == "toy"


def test_run_time_shapes_under_xla():
    loss = PerImageLoss(C, reduction="none")
    spec = [tf.TensorSpec((None, None, 4), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None, None, None, 2, 5 + C), tf.float32),
            tf.TensorSpec((None,), tf.float32)]

    @tf.function(input_signature=spec, jit_compile=True)
    def run(b, l, r, w):
        return loss(y(b, l), r, sample_weight=w)

    for batch, boxes_per_image in ((3, 4), (2, 1), (5, 6)):
        raw, boxes, labels = case(batch, batch, boxes_per_image)
        w = np.linspace(0.5, 1.5, batch).astype(np.float32)
        np.testing.assert_allclose(run(boxes, labels, raw, w),
                                   w * per_image_np(raw, boxes, labels),
                                   rtol=1e-5)
