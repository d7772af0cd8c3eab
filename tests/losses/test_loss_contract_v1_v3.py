"""v1, v2 and v3 under the `YoloLoss` contract: per-image values against the
float64 numpy references of tests/v1_cases.py, v2_cases.py and v3_cases.py
evaluated one image at a time; sample_weight; state; YoloModel's logging."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import v1_cases
import v2_cases
import v3_cases
from keras_yolo.losses import YoloV1Loss, YoloV2Loss, YoloV3Loss
from keras_yolo.models import YoloModel


def v1_case():
    boxes, labels, raw = v1_cases.random_case(np.random.default_rng(0), 3, 4,
                                             2, 3, 5)
    labels[-1] = -1

    def reference(b):
        return sum(v1_cases.seed_loss_np(boxes[b:b + 1], labels[b:b + 1],
                                        raw[b:b + 1], 4, 2, 3).values())

    return YoloV1Loss, dict(num_classes=3, grid_size=4, boxes_per_cell=2), \
        raw, boxes, labels, reference


def v2_case():
    raw, boxes, labels = v2_cases.random_case(1)

    def reference(b):
        return sum(v2_cases.seed_loss_np(raw[b:b + 1], boxes[b:b + 1],
                                        labels[b:b + 1],
                                        v2_cases.ANCHORS_CELLS).values())

    return YoloV2Loss, dict(num_classes=4, anchors=v2_cases.ANCHORS), \
        raw, boxes, labels, reference


def v3_case():
    raw, boxes, labels = v3_cases.random_case(2, batch=3, spread=0.7)
    raw = v3_cases.plant_predictions(raw, boxes, labels)

    def reference(b):
        parts = v3_cases.seed_loss_np([r[b:b + 1] for r in raw],
                                     boxes[b:b + 1], labels[b:b + 1],
                                     v3_cases.SMALL_ANCHORS, 3)[0]
        return sum(parts.values())

    return YoloV3Loss, dict(num_classes=3, anchors=v3_cases.SMALL_ANCHORS), \
        raw, boxes, labels, reference


CASES = {"v1": v1_case, "v2": v2_case, "v3": v3_case}


@pytest.mark.parametrize("version", sorted(CASES))
def test_reduction_none_is_the_numpy_loss_of_each_image(version):
    cls, kwargs, raw, boxes, labels, reference = CASES[version]()
    y_true = {"boxes": boxes, "labels": labels}
    per_image = np.array([reference(b) for b in range(len(labels))])
    assert per_image[-1] > 0 and len(set(per_image.round(6))) == 3
    none = cls(**kwargs, reduction="none")(y_true, raw)
    assert none.shape == (3,)
    np.testing.assert_allclose(none, per_image, rtol=2e-5)
    mean = float(cls(**kwargs)(y_true, raw))
    assert mean == pytest.approx(per_image.mean(), rel=2e-5)
    total = float(cls(**kwargs, reduction="sum")(y_true, raw))
    assert total == pytest.approx(3 * mean, rel=1e-6)
    w = np.array([2.0, 0.0, 0.5], np.float32)
    weighted = float(cls(**kwargs)(y_true, raw, sample_weight=w))
    assert weighted == pytest.approx((w * per_image).sum() / 3, rel=2e-5)
    loss = cls(**kwargs, reduction="none")
    total, terms = loss.compute_terms(y_true, raw, sample_weight=w)
    np.testing.assert_allclose(total, w * per_image, rtol=2e-5)
    np.testing.assert_allclose(sum(terms.values()), total, rtol=1e-6)


@pytest.mark.parametrize("version", sorted(CASES))
def test_config_round_trip_keeps_the_reduction(version):
    cls, kwargs, raw, boxes, labels, _ = CASES[version]()
    loss = cls(**kwargs, reduction="sum")
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert type(restored) is cls and restored.get_config() == loss.get_config()
    y_true = {"boxes": boxes, "labels": labels}
    assert float(restored(y_true, raw)) == float(loss(y_true, raw))


def test_v2_seen_advances_once_per_call_never_in_components():
    raw, boxes, labels = v2_cases.random_case(3)
    y_true = {"boxes": boxes, "labels": labels}
    loss = YoloV2Loss(num_classes=4, anchors=v2_cases.ANCHORS,
                      darknet_compat=True, seen=12797)
    # Batch 3: the next call computes with seen 12800, the prior term off.
    parts = loss.components(y_true, raw)
    assert int(loss.seen.numpy()) == 12797
    frozen = YoloV2Loss(num_classes=4, anchors=v2_cases.ANCHORS,
                        darknet_compat=True, seen=12800, count_seen=False)
    total, terms = loss.compute_terms(y_true, raw)
    assert int(loss.seen.numpy()) == 12800
    for key, value in frozen.components(y_true, raw).items():
        assert float(parts[key]) == float(terms[key]) == pytest.approx(
            float(value), rel=1e-6)
    step = tf.function(lambda r: loss(y_true, r), jit_compile=True)
    step(raw)
    step(raw)
    assert int(loss.seen.numpy()) == 12806


def test_v1_takes_sample_weight_and_refuses_unknown_reduction():
    cls, kwargs, raw, boxes, labels, reference = CASES["v1"]()
    with pytest.raises(ValueError, match="reduction"):
        cls(**kwargs, reduction="max")
    got = cls(**kwargs, reduction="mean_with_sample_weight")(
        {"boxes": boxes, "labels": labels}, raw, sample_weight=[1.0, 3.0, 0.0])
    want = (reference(0) + 3 * reference(1)) / 4
    assert float(got) == pytest.approx(want, rel=2e-5)


def small_v2_model():
    inputs = keras.Input((64, 64, 3))
    raw = keras.layers.Conv2D(3 * 9, 1, strides=32)(inputs)
    return YoloModel(inputs, keras.layers.Reshape((2, 2, 3, 9))(raw))


def test_yolo_model_logs_terms_counts_pixel_boxes_past_the_far_edge_and_weights():
    keras.utils.set_random_seed(0)
    model = small_v2_model()
    loss = YoloV2Loss(num_classes=4, anchors=v2_cases.ANCHORS,
                      bounding_box_format="xyxy")
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss,
                  jit_compile=True)
    images = np.random.default_rng(0).uniform(size=(4, 64, 64, 3)).astype(
        np.float32)
    boxes = np.tile(np.array([[[4, 4, 30, 40], [70, 10, 90, 30]]],
                             np.float32), (4, 1, 1))   # row 1: x1 >= 64
    labels = np.tile(np.array([[1, 2]], np.int32), (4, 1))
    weights = np.array([1.0, 0.0, 2.0, 1.0], np.float32)
    history = model.fit(images, {"boxes": boxes, "labels": labels},
                        sample_weight=weights, batch_size=2, epochs=1,
                        verbose=0, shuffle=False)
    assert history.history["invalid_boxes"] == [4.0]
    clean = {"boxes": boxes[:, :1], "labels": labels[:, :1]}
    outputs = model(images)
    per_image = YoloV2Loss(num_classes=4, anchors=v2_cases.ANCHORS,
                           bounding_box_format="xyxy", reduction="none")(
        clean, outputs).numpy()
    batches = [(weights[i:i + 2] * per_image[i:i + 2]).sum() / 2
               for i in (0, 2)]
    assert history.history["loss"][0] == pytest.approx(np.mean(batches),
                                                       rel=1e-5)
    terms = loss.components(clean, outputs, sample_weight=weights)
    logged = (history.history["box"][0], history.history["obj"][0],
              history.history["cls"][0])
    # Epoch means of per-batch weighted terms; with equal batch sizes the
    # mean of the two batch values equals the full-batch weighted term.
    assert logged == pytest.approx((float(terms["box"]),
                                    float(terms["obj"] + terms["noobj"]),
                                    float(terms["cls"])), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("version", sorted(CASES))
def test_per_image_values_with_run_time_batch_and_box_count_under_xla(version):
    cls, kwargs, raw, boxes, labels, reference = CASES[version]()
    loss = cls(**kwargs, reduction="none")
    levels = raw if isinstance(raw, list) else [raw]
    spec = [tf.TensorSpec((None, None, 4), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
            [tf.TensorSpec((None, *r.shape[1:]), tf.float32) for r in levels],
            tf.TensorSpec((None,), tf.float32)]

    @tf.function(input_signature=spec, jit_compile=True)
    def run(b, l, r, w):
        return loss({"boxes": b, "labels": l}, r if len(r) > 1 else r[0],
                    sample_weight=w)

    want = np.array([reference(b) for b in range(3)])
    w = np.array([1.0, 0.5, 2.0], np.float32)
    np.testing.assert_allclose(run(boxes, labels, levels, w), w * want,
                               rtol=2e-5)
    # Two images, more padding rows: a new batch and box count, same trace.
    pad = lambda x, v: np.pad(x, [(0, 0), (0, 3)] + [(0, 0)] * (x.ndim - 2),
                              constant_values=v)  # noqa: E731
    got = run(pad(boxes, 0.0)[1:], pad(labels, -1)[1:],
              [r[1:] for r in levels], w[1:])
    np.testing.assert_allclose(got, w[1:] * want[1:], rtol=2e-5)
    assert run.experimental_get_tracing_count() == 1
