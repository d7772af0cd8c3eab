"""YoloV4Loss on the YoloLoss base: every term is a sum over one image, so
every Keras reduction and a per-image `sample_weight` are honest. Checked
against the loss of each image evaluated alone (batch of one), in both
modes; darknet_compat's custom box gradient included."""

import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.losses import YoloV4Loss

STRIDES = (8, 16, 32)
C = 3
IMAGE = 64
# Small anchors for a 64 x 64 input (grids 8, 4, 2), as in test_v4.py.
ANCHORS = [[(6, 8), (10, 14), (14, 10)], [(18, 24), (24, 18), (28, 36)],
           [(40, 30), (48, 56), (60, 60)]]
MODES = {
    "seed": dict(label_smoothing=0.1),
    "darknet": dict(darknet_compat=True),
}


def _case(seed=0, real=(3, 0, 5)):
    rng = np.random.default_rng(seed)
    batch = len(real)
    raw = [rng.normal(0, 1.5, (batch, IMAGE // s, IMAGE // s, 3, 5 + C))
           .astype(np.float32) for s in STRIDES]
    boxes = np.zeros((batch, 6, 4), np.float32)
    labels = np.full((batch, 6), -1, np.int32)
    for b, n in enumerate(real):
        boxes[b, :n, :2] = rng.uniform(0.05, 0.95, (n, 2))
        boxes[b, :n, 2:] = rng.uniform(0.05, 0.6, (n, 2))
        labels[b, :n] = rng.integers(0, C, n)
    return raw, boxes, labels


def _value_and_grads(loss, boxes, labels, raw, sample_weight=None):
    levels = [tf.constant(r) for r in raw]
    with tf.GradientTape() as tape:
        tape.watch(levels)
        value = loss({"boxes": boxes, "labels": labels}, levels,
                     sample_weight=sample_weight)
    return value.numpy(), [g.numpy() for g in tape.gradient(value, levels)]


def _alone(mode, raw, boxes, labels):
    """Each image's loss and gradient, evaluated as a batch of one."""
    loss = YoloV4Loss(C, anchors=ANCHORS, **MODES[mode])
    out = [_value_and_grads(loss, boxes[i:i + 1], labels[i:i + 1],
                            [r[i:i + 1] for r in raw])
           for i in range(len(boxes))]
    return (np.array([float(v) for v, _ in out]),
            [np.concatenate([g[l] for _, g in out]) for l in range(3)])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_none_gives_each_images_own_loss(mode):
    raw, boxes, labels = _case()
    expected, _ = _alone(mode, raw, boxes, labels)
    loss = YoloV4Loss(C, anchors=ANCHORS, reduction="none", **MODES[mode])
    got = loss({"boxes": boxes, "labels": labels}, raw).numpy()
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    terms = loss.components({"boxes": boxes, "labels": labels}, raw)
    np.testing.assert_allclose(sum(t.numpy() for t in terms.values()), got,
                               rtol=1e-6)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_weighted_reductions_and_their_gradients(mode):
    raw, boxes, labels = _case(1)
    alone, alone_grads = _alone(mode, raw, boxes, labels)
    weight = np.array([0.5, 2.0, 1.5], np.float32)
    # The gradient of image i's loss only reaches image i's outputs.
    weighted_grads = [w[:, None, None, None, None] * g for w, g in
                      zip([weight] * 3, alone_grads)]
    for reduction, scale in (("sum_over_batch_size", 1 / 3), ("sum", 1.0),
                             ("mean_with_sample_weight", 1 / weight.sum())):
        loss = YoloV4Loss(C, anchors=ANCHORS, reduction=reduction,
                          **MODES[mode])
        value, grads = _value_and_grads(loss, boxes, labels, raw, weight)
        assert float(value) == pytest.approx(scale * (weight * alone).sum(),
                                             rel=1e-5), reduction
        for got, want in zip(grads, weighted_grads):
            np.testing.assert_allclose(got, scale * want, rtol=1e-4,
                                       atol=1e-6)


def test_default_is_the_mean_of_the_per_image_sums():
    raw, boxes, labels = _case(2)
    alone, _ = _alone("seed", raw, boxes, labels)
    loss = YoloV4Loss(C, anchors=ANCHORS, **MODES["seed"])
    assert float(loss({"boxes": boxes, "labels": labels}, raw)) == (
        pytest.approx(alone.mean(), rel=1e-5))


def test_darknet_alias_arguments_and_unknown_keywords():
    loss = YoloV4Loss(C, iou_normalizer=0.5, cls_normalizer=2.0)
    assert (loss.lambda_coord, loss.lambda_class) == (0.5, 2.0)
    with pytest.raises(ValueError, match="iou_normalizer"):
        YoloV4Loss(C, lambda_coord=0.1, iou_normalizer=0.5)
    with pytest.raises(TypeError, match="bogus"):
        YoloV4Loss(C, bogus=1)
    config = YoloV4Loss(C, reduction="none").get_config()
    assert YoloV4Loss.from_config(config).get_config() == config
