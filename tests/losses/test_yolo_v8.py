"""YoloV8Loss against ultralytics 8.4.190 `v8DetectionLoss` (terms and gradients)."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import require_peer

import keras
from keras_yolo.assign.groundtruth import GroundTruthError
from keras_yolo.losses.yolo_v8 import YoloV8Loss
from yolo_v8_inputs import REG_MAX, STRIDES, padded_truths, random_levels
# Issue #17: terms and gradients equal ultralytics' within 1e-5 relative
# (gradients relative to their largest magnitude).
RTOL = 1e-5


# Image 0: several truths sharing anchor points (nested and near-identical
# boxes about one centre), tiny truths (2-3 px at 128 px: widened to 16 px
# for the candidate test), the whole image; image 1 has none.
CRAFTED = (
    (0, (0.3031, 0.4047, 0.16, 0.15)),
    (0, (0.3033, 0.4049, 0.165, 0.152)),
    (0, (0.3036, 0.4043, 0.3, 0.25)),
    (0, (0.3034, 0.4046, 0.6, 0.55)),
    (0, (0.71, 0.22, 0.02, 0.015)),
    (0, (0.12, 0.83, 0.015, 0.02)),
    (0, (0.5, 0.5, 1.0, 1.0)),
    (2, (0.5, 0.5, 1.0, 1.0)),
    (2, (0.52, 0.48, 0.9, 0.95)),
)

CASES = {
    # non-square input, many truths, an empty image, crafted rows
    "mixed": dict(image_hw=(96, 160), per_image=(10, 0, 3), num_classes=5,
                  max_boxes=20, crafted=CRAFTED),
    "one_class": dict(image_hw=(128, 96), per_image=(6, 2), num_classes=1,
                      max_boxes=12, crafted=CRAFTED[:4]),
    "all_empty": dict(image_hw=(64, 64), per_image=(0, 0), num_classes=3,
                      max_boxes=4),
    "crowded": dict(image_hw=(64, 96), per_image=(30,), num_classes=4,
                    max_boxes=32),
    # ultralytics' default input and class count
    "coco640": dict(image_hw=(640, 640), per_image=(12,), num_classes=80,
                    max_boxes=20, crafted=CRAFTED[:7]),
}


def _case(name, seed=0):
    spec = CASES[name]
    rng = np.random.default_rng(seed)
    raw = random_levels(rng, len(spec["per_image"]), spec["image_hw"],
               spec["num_classes"])
    boxes, labels = padded_truths(rng, spec["per_image"], spec["max_boxes"],
                            spec["num_classes"], spec.get("crafted", ()))
    return raw, boxes, labels, spec["num_classes"]


def _ours(loss, raw, boxes, labels):
    """Terms and d(total)/d(raw) of our loss."""
    y_true = {"boxes": tf.constant(boxes), "labels": tf.constant(labels)}
    levels = [tf.constant(p) for p in raw]
    with tf.GradientTape() as tape:
        tape.watch(levels)
        parts = loss.components(y_true, levels)
        total = loss(y_true, levels)
    grads = tape.gradient(total, levels)
    return ({k: float(v) for k, v in parts.items()}, float(total),
            [g.numpy() for g in grads])


def _reference(reference, raw, boxes, labels, num_classes):
    """v8DetectionLoss terms and total `loss.sum()` (x batch size, as
    `reduction="sum"`) and its gradient on our raw layout."""
    criterion = reference.detection_loss(num_classes, REG_MAX, STRIDES)
    preds = reference.raw_to_preds(raw, REG_MAX, requires_grad=True)
    loss, _ = criterion(preds, reference.batch_dict(boxes, labels))
    loss.sum().backward()
    terms = dict(zip(("box", "cls", "dfl"), loss.detach().numpy().tolist()))
    grad = np.concatenate([preds["boxes"].grad.numpy().transpose(0, 2, 1),
                           preds["scores"].grad.numpy().transpose(0, 2, 1)],
                          -1)
    level_hw = [p.shape[1:3] for p in raw]
    return (terms, float(loss.detach().sum()),
            reference.grads_to_levels(grad, level_hw))


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def _grad_rel(ours, ref):
    scale = max(np.abs(g).max() for g in ref)
    return max(np.abs(o - r).max() for o, r in zip(ours, ref)) / max(
        scale, 1e-12)


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(CASES))
def test_terms_and_gradients_match_ultralytics(case):
    reference = require_peer("ultralytics8_reference",
                             "(bash .ci/install_parity)")
    raw, boxes, labels, num_classes = _case(case)
    loss = YoloV8Loss(num_classes=num_classes, reduction="sum")
    parts, total, grads = _ours(loss, raw, boxes, labels)
    ref_parts, ref_total, ref_grads = _reference(reference, raw, boxes,
                                                 labels, num_classes)
    errors = {key: _rel(parts[key], ref_parts[key])
              for key in ("box", "cls", "dfl")}
    errors["grad"] = _grad_rel(grads, ref_grads)
    print(f"v8 parity {case}:", {k: f"{v:.1e}" for k, v in errors.items()})
    for key in ("box", "cls", "dfl"):
        assert errors[key] <= RTOL, (key, parts[key], ref_parts[key])
    assert _rel(total, ref_total) <= RTOL, (total, ref_total)
    assert errors["grad"] <= RTOL
    if case != "all_empty":
        assert parts["box"] > 0 and parts["dfl"] > 0
    else:
        assert parts["box"] == 0 and parts["dfl"] == 0


@pytest.mark.parity
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_batches_match_ultralytics(seed):
    """Denser random truths on a larger non-square input."""
    reference = require_peer("ultralytics8_reference",
                             "(bash .ci/install_parity)")
    rng = np.random.default_rng(seed)
    raw = random_levels(rng, 2, (160, 224), 7, cls_bias=-4.0)
    per_image = (rng.integers(1, 15), rng.integers(0, 15))
    boxes, labels = padded_truths(rng, per_image, 16, 7)
    loss = YoloV8Loss(num_classes=7, reduction="sum")
    parts, total, grads = _ours(loss, raw, boxes, labels)
    ref_parts, ref_total, ref_grads = _reference(reference, raw, boxes,
                                                 labels, 7)
    errors = {key: _rel(parts[key], ref_parts[key])
              for key in ("box", "cls", "dfl")}
    errors["grad"] = _grad_rel(grads, ref_grads)
    print(f"v8 parity seed {seed}:",
          {k: f"{v:.1e}" for k, v in errors.items()})
    for key in ("box", "cls", "dfl"):
        assert errors[key] <= RTOL, key
    assert errors["grad"] <= RTOL


def test_total_is_the_sum_of_components_and_sum_is_batch_times_mean():
    raw, boxes, labels, c = _case("mixed")
    y_true = {"boxes": boxes, "labels": labels}
    plain = YoloV8Loss(num_classes=c)
    scaled = YoloV8Loss(num_classes=c, reduction="sum")
    parts = plain.components(y_true, raw)
    total = float(plain(y_true, raw))
    np.testing.assert_allclose(total, sum(float(v) for v in parts.values()),
                               rtol=1e-6)
    np.testing.assert_allclose(float(scaled(y_true, raw)), 3 * total,
                               rtol=1e-6)


def test_gains_scale_their_term_only():
    raw, boxes, labels, c = _case("mixed")
    y_true = {"boxes": boxes, "labels": labels}
    base = YoloV8Loss(num_classes=c).components(y_true, raw)
    other = YoloV8Loss(num_classes=c, box=1.0, cls=2.0, dfl=3.0).components(
        y_true, raw)
    np.testing.assert_allclose(float(other["box"]), float(base["box"]) / 7.5,
                               rtol=1e-6)
    np.testing.assert_allclose(float(other["cls"]), float(base["cls"]) * 4,
                               rtol=1e-6)
    np.testing.assert_allclose(float(other["dfl"]), float(base["dfl"]) * 2,
                               rtol=1e-6)


def test_no_truth_gives_the_plain_bce_of_every_logit():
    """Hand reference: without truths every target is 0 and S = 1, so the
    loss is cls * sum BCE(logit, 0) = cls * sum softplus(logit)."""
    raw, boxes, labels, c = _case("all_empty")
    parts = YoloV8Loss(num_classes=c).components(
        {"boxes": boxes, "labels": labels}, raw)
    logits = np.concatenate([p[..., 4 * REG_MAX:].ravel() for p in raw])
    expected = 0.5 * np.sum(np.logaddexp(0.0, logits.astype(np.float64)))
    np.testing.assert_allclose(float(parts["cls"]), expected, rtol=1e-5)
    assert float(parts["box"]) == 0.0 and float(parts["dfl"]) == 0.0


def test_pixel_formats_give_the_same_loss():
    raw, boxes, labels, c = _case("mixed")
    h, w = CASES["mixed"]["image_hw"]
    rel = YoloV8Loss(num_classes=c)({"boxes": boxes, "labels": labels}, raw)
    xyxy = np.concatenate([(boxes[..., :2] - boxes[..., 2:] / 2),
                           (boxes[..., :2] + boxes[..., 2:] / 2)], -1)
    xyxy = xyxy * np.array([w, h, w, h], np.float32)
    xyxy[labels < 0] = 0
    px = YoloV8Loss(num_classes=c, bounding_box_format="xyxy")(
        {"boxes": xyxy, "labels": labels}, raw)
    np.testing.assert_allclose(float(px), float(rel), rtol=1e-5)


def test_padding_position_does_not_matter():
    """Padding rows between real rows (as masked invalid rows leave them)
    give the loss of the compacted rows."""
    raw, boxes, labels, c = _case("one_class")
    loss = YoloV8Loss(num_classes=c)
    want = float(loss({"boxes": boxes, "labels": labels}, raw))
    rng = np.random.default_rng(0)
    shuffled_boxes = np.zeros_like(boxes)
    shuffled_labels = np.full_like(labels, -1)
    for b in range(labels.shape[0]):
        real = np.flatnonzero(labels[b] >= 0)
        # random slots for the real rows, in their order (ties between
        # truths go to the first row, so their order matters)
        slots = np.sort(rng.choice(labels.shape[1], len(real), replace=False))
        shuffled_boxes[b, slots] = boxes[b, real]
        shuffled_labels[b, slots] = labels[b, real]
    assert not np.array_equal(shuffled_labels, labels)
    got = float(loss({"boxes": shuffled_boxes, "labels": shuffled_labels},
                     raw))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_xla_and_run_time_shapes_match_eager():
    raw, boxes, labels, c = _case("mixed")
    loss = YoloV8Loss(num_classes=c)
    y_true = {"boxes": tf.constant(boxes), "labels": tf.constant(labels)}
    levels = [tf.constant(p) for p in raw]

    def value_and_grads(y, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = loss(y, x)
        return total, tape.gradient(total, x)

    eager = value_and_grads(y_true, levels)
    xla = tf.function(value_and_grads, jit_compile=True)(y_true, levels)
    spec = ({"boxes": tf.TensorSpec([None, None, 4], tf.float32),
             "labels": tf.TensorSpec([None, None], tf.int32)},
            [tf.TensorSpec([None, None, None, p.shape[-1]], tf.float32)
             for p in raw])
    dynamic = tf.function(value_and_grads, input_signature=spec)
    for got in (xla, dynamic(y_true, levels)):
        np.testing.assert_allclose(float(got[0]), float(eager[0]), rtol=1e-5)
        for g, e in zip(got[1], eager[1]):
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4,
                                       atol=1e-7)
    # another batch size, box count and input size through the same graph
    raw2, boxes2, labels2, _ = _case("one_class")
    raw2 = [np.concatenate([p[..., :4 * REG_MAX], np.zeros(
        p.shape[:-1] + (c,), np.float32)], -1) for p in raw2]
    y2 = {"boxes": tf.constant(boxes2), "labels": tf.constant(labels2)}
    x2 = [tf.constant(p) for p in raw2]
    np.testing.assert_allclose(float(dynamic(y2, x2)[0]),
                               float(value_and_grads(y2, x2)[0]), rtol=1e-5)


def test_invalid_rows_raise_eagerly_and_are_masked_under_xla():
    raw, boxes, labels, c = _case("mixed")
    loss = YoloV8Loss(num_classes=c)
    clean = float(loss({"boxes": boxes, "labels": labels}, raw))
    for bad_box, bad_label in (((0.5, 0.5, 0.1, 0.1), 99),
                               ((np.nan, 0.5, 0.1, 0.1), 1),
                               ((0.5, 0.5, -0.1, 0.1), 1)):
        b2, l2 = boxes.copy(), labels.copy()
        b2[1, 0], l2[1, 0] = bad_box, bad_label  # image 1 had no truth
        with pytest.raises(GroundTruthError):
            loss({"boxes": b2, "labels": l2}, raw)
        compiled = tf.function(lambda y, x: loss(y, x), jit_compile=True)
        got = float(compiled({"boxes": tf.constant(b2),
                              "labels": tf.constant(l2)},
                             [tf.constant(p) for p in raw]))
        np.testing.assert_allclose(got, clean, rtol=1e-5)


def test_config_round_trip_and_saving():
    loss = YoloV8Loss(num_classes=7, reg_max=8, strides=(8, 16),
                      bounding_box_format="xyxy", box=1.0, cls=2.0, dfl=3.0,
                      topk=5, alpha=1.0, beta=4.0, reduction="sum")
    config = loss.get_config()
    again = YoloV8Loss.from_config(config)
    assert again.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, YoloV8Loss)
    assert restored.get_config() == config
    assert restored.assigner.min_size == 16.0 and restored.assigner.topk == 5


@pytest.mark.parametrize("kwargs, word", [
    (dict(num_classes=0), "num_classes"),
    (dict(reg_max=1), "reg_max"),
    (dict(topk=0), "topk"),
    (dict(bounding_box_format="xywhr"), "bounding_box_format"),
    (dict(reduction="none"), "reduction"),
])
def test_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        YoloV8Loss(**{"num_classes": 3, **kwargs})


def test_wrong_channels_and_levels_are_named():
    raw, boxes, labels, c = _case("mixed")
    y_true = {"boxes": boxes, "labels": labels}
    with pytest.raises(ValueError, match=r"y_pred\[0\] has shape"):
        YoloV8Loss(num_classes=c + 1)(y_true, raw)
    with pytest.raises(ValueError, match="3 levels"):
        YoloV8Loss(num_classes=c)(y_true, raw[:2])


def test_scalar_sample_weight_scales_and_per_image_weights_are_refused():
    raw, boxes, labels, c = _case("mixed")
    y_true = {"boxes": boxes, "labels": labels}
    loss = YoloV8Loss(num_classes=c)
    base = float(loss(y_true, raw))
    np.testing.assert_allclose(float(loss(y_true, raw, sample_weight=0.25)),
                               0.25 * base, rtol=1e-6)
    with pytest.raises(ValueError, match="sample_weight"):
        loss(y_true, raw, sample_weight=np.ones(3, np.float32))


def test_padded_batch_dataset_through_one_graph():
    """Batches of a `padded_batch` dataset (M changes from batch to batch)
    through one traced step equal the eager loss of each batch."""
    rng = np.random.default_rng(7)
    counts = [0, 3, 7, 1, 12, 2]
    rows = [(np.concatenate([rng.uniform(0.2, 0.8, (n, 2)),
                             rng.uniform(0.05, 0.4, (n, 2))], -1
                            ).astype(np.float32),
             rng.integers(0, 3, n).astype(np.int32)) for n in counts]
    ds = tf.data.Dataset.from_generator(
        lambda: ({"boxes": b, "labels": l} for b, l in rows),
        output_signature={"boxes": tf.TensorSpec([None, 4], tf.float32),
                          "labels": tf.TensorSpec([None], tf.int32)})
    ds = ds.padded_batch(2, padding_values={"boxes": 0.0, "labels": -1})
    loss = YoloV8Loss(num_classes=3)
    raw = random_levels(np.random.default_rng(8), 2, (64, 64), 3)
    signature = ({"boxes": tf.TensorSpec([None, None, 4], tf.float32),
                  "labels": tf.TensorSpec([None, None], tf.int32)},
                 [tf.TensorSpec(p.shape, tf.float32) for p in raw])
    step = tf.function(lambda y, x: loss(y, x), input_signature=signature)
    seen = set()
    for y in ds:
        seen.add(int(y["labels"].shape[1]))
        np.testing.assert_allclose(float(step(y, raw)), float(loss(y, raw)),
                                   rtol=1e-5)
    assert len(seen) == 3
    assert step.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_extreme_raw_outputs_give_finite_loss_and_gradients(scale):
    """Saturated DFL bins and class logits (a diverging model), a truth in
    the image corner and one the size of the image."""
    rng = np.random.default_rng(0)
    boxes, labels = padded_truths(rng, (5, 0), 8, 3, crafted=(
        (0, (0.5, 0.5, 1.0, 1.0)), (0, (0.0, 0.0, 0.01, 0.01))))
    levels = [tf.constant(p * scale)
              for p in random_levels(rng, 2, (64, 96), 3)]
    with tf.GradientTape() as tape:
        tape.watch(levels)
        total = YoloV8Loss(num_classes=3)({"boxes": boxes, "labels": labels},
                                          levels)
    assert np.isfinite(float(total)) and float(total) > 0
    for g in tape.gradient(total, levels):
        assert np.all(np.isfinite(g.numpy()))


def test_fit_logs_box_cls_and_dfl():
    """YoloModel logs the terms the loss declares: box, cls, dfl (no obj)."""
    from keras_yolo.models.yolo_model import YoloModel

    inputs = keras.Input((64, 64, 3))
    levels = [keras.layers.Conv2D(4 * REG_MAX + 3, 1, strides=s)(inputs)
              for s in STRIDES]
    model = YoloModel(inputs, levels)
    model.compile(keras.optimizers.SGD(1e-3), loss=YoloV8Loss(num_classes=3))
    rng = np.random.default_rng(0)
    images = rng.random((4, 64, 64, 3)).astype(np.float32)
    boxes, labels = padded_truths(rng, (2, 0, 1, 3), 4, 3)
    history = model.fit(images, {"boxes": boxes, "labels": labels},
                        batch_size=2, epochs=1, verbose=0).history
    assert {"box", "cls", "dfl"} <= set(history) and "obj" not in history
    total = history["box"][0] + history["cls"][0] + history["dfl"][0]
    np.testing.assert_allclose(history["loss"][0], total, rtol=1e-5)
