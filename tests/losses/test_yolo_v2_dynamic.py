"""YOLOv2 with sizes known only at run time, hostile inputs, checked truth.

Issue #18: batch size B, box count M (and the grid) unknown when the step is
traced (`padded_batch`, Keras' relaxed retracing). Issue #13: finite losses
and gradients for any raw output, invalid ground-truth rows raise eagerly and
are masked in compiled steps, decoded boxes always finite.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.assign.groundtruth import GroundTruthError
from keras_yolo.layers import YoloV2Decode
from keras_yolo.grid import MAX_LOG_SCALE
from keras_yolo.losses import YoloV2Loss
from keras_yolo.losses.yolo_v2 import MAX_PREDICTED_CELLS
from test_yolo_v1_dynamic import eager_epoch_loss, padded_batch_dataset, value_and_grad
from v2_cases import ANCHORS, ANCHORS_CELLS, random_case, seed_loss_np

A, C = 3, 4
DEPTH = 5 + C
TRUTH_SIGNATURE = [tf.TensorSpec((None, None, 4), tf.float32),
                   tf.TensorSpec((None, None), tf.int32)]


def make_loss(darknet_compat, **kwargs):
    return YoloV2Loss(num_classes=C, anchors=ANCHORS,
                      darknet_compat=darknet_compat, count_seen=False, **kwargs)


@pytest.mark.parametrize("compat", [False, True], ids=["seed", "darknet"])
def test_unknown_batch_box_count_and_grid_match_static_shapes(compat):
    loss = make_loss(compat, ignore_thresh=None if compat else 0.5)
    run = value_and_grad(loss)
    grid = (4, 5)
    compiled = [
        tf.function(run, input_signature=TRUTH_SIGNATURE + [
            tf.TensorSpec((None, *grid, A, DEPTH))]),
        tf.function(run, input_signature=TRUTH_SIGNATURE + [
            tf.TensorSpec((None, *grid, A, DEPTH))], jit_compile=True),
        tf.function(run, input_signature=TRUTH_SIGNATURE + [  # grid too
            tf.TensorSpec((None, None, None, None, None))]),
    ]
    for seed, (batch, m) in enumerate(((2, 3), (3, 6))):
        raw, boxes, labels = random_case(seed, batch=batch, grid=grid,
                                         num_classes=C, max_boxes=m)
        args = (tf.constant(boxes), tf.constant(labels), tf.constant(raw))
        eager = run(*args)
        if not compat:  # the static value is itself the seed's formula
            want = sum(seed_loss_np(raw, boxes, labels, ANCHORS_CELLS,
                                    ignore_thresh=0.5).values())
            assert float(eager[0]) == pytest.approx(want, rel=1e-4)
        for fn in compiled:
            value, grad = fn(*args)
            assert float(value) == pytest.approx(float(eager[0]), rel=1e-5)
            np.testing.assert_allclose(grad, eager[1], rtol=1e-4, atol=1e-6)
    for fn in compiled[::2]:
        assert len(fn._list_all_concrete_functions()) == 1
    decode = YoloV2Decode(anchors=ANCHORS, bounding_box_format="xyxy")
    dynamic = tf.function(decode, input_signature=[
        tf.TensorSpec((None, None, None, A, DEPTH))])
    np.testing.assert_allclose(dynamic(raw)["boxes"], decode(raw)["boxes"],
                               rtol=1e-6)


def test_wrong_anchor_count_named_even_when_unknown_at_trace_time():
    loss = make_loss(False)
    fn = tf.function(lambda b, l, r: loss({"boxes": b, "labels": l}, r),
                     input_signature=TRUTH_SIGNATURE + [
                         tf.TensorSpec((None, None, None, None, None))])
    raw, boxes, labels = random_case(0, num_classes=C)
    with pytest.raises(tf.errors.InvalidArgumentError):
        fn(boxes, labels, raw[..., :2, :])
    with pytest.raises(ValueError, match=f"num_classes={C}"):
        loss({"boxes": boxes, "labels": labels}, raw[..., :-1])


@pytest.mark.parametrize("compat", [False, True], ids=["seed", "darknet"])
def test_invalid_rows_raise_eagerly_and_change_nothing_under_xla(compat):
    loss = make_loss(compat)
    raw, boxes, labels = random_case(1, batch=2, num_classes=C, max_boxes=4)
    bad_boxes = np.concatenate([boxes, np.zeros((2, 3, 4), np.float32)], 1)
    bad_labels = np.concatenate([labels, np.full((2, 3), -1, np.int32)], 1)
    bad_boxes[0, 4], bad_labels[0, 4] = [0.5, 0.5, 0.2, 0.2], 99  # label >= C
    bad_boxes[1, 5], bad_labels[1, 5] = [np.nan, 0.5, 0.2, 0.2], 0  # NaN
    bad_boxes[0, 6], bad_labels[0, 6] = [0.5, 0.5, 0.2, -0.1], 2  # height < 0
    bad_boxes[1, 6], bad_labels[1, 6] = [1.7, 0.5, 0.2, 0.2], 3  # outside
    run = tf.function(value_and_grad(loss), jit_compile=True)
    value, grad = run(tf.constant(bad_boxes), tf.constant(bad_labels),
                      tf.constant(raw))
    want, want_grad = run(tf.constant(boxes), tf.constant(labels),
                          tf.constant(raw))
    assert float(value) == pytest.approx(float(want), rel=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)
    with pytest.raises(GroundTruthError, match="image 0 row 4: field 'labels'"):
        loss({"boxes": bad_boxes, "labels": bad_labels}, raw)
    bad_labels[0, 4] = -1
    with pytest.raises(GroundTruthError, match="image 0 row 6: field 'boxes'"):
        loss({"boxes": bad_boxes, "labels": bad_labels}, raw)


HOSTILE = [50.0, -50.0, 100.0, 1e4, -1e4, 0.0]


@pytest.mark.parametrize("options, dtype", [
    (dict(), "float32"), (dict(ignore_thresh=0.5), "float16"),
    (dict(), "bfloat16"), (dict(darknet_compat=True), "float32"),
    (dict(darknet_compat=True, bias_match=False), "float16")],
    ids=lambda p: p if isinstance(p, str) else "-".join(
        f"{k}={v}" for k, v in p.items()) or "seed")
def test_hostile_raw_outputs_give_finite_loss_and_gradients(options, dtype):
    loss = make_loss(options.pop("darknet_compat", False), **options)
    raw, boxes, labels = random_case(2, batch=2, num_classes=C, max_boxes=4)
    run = value_and_grad(loss)
    xla = tf.function(run, jit_compile=True)
    for value in HOSTILE:
        for truth in (labels, np.full_like(labels, -1)):
            for pattern in ("all", "sizes and scores"):
                x = np.full_like(raw, value) if pattern == "all" else raw.copy()
                if pattern != "all":
                    x[..., 2:5] = value
                args = (tf.constant(boxes), tf.constant(truth),
                        tf.constant(x, dtype))
                for fn in (run, xla):
                    total, grad = fn(*args)
                    grad = tf.cast(grad, tf.float32).numpy()
                    assert np.isfinite(float(total)), (value, pattern)
                    assert np.all(np.isfinite(grad)), (value, pattern)


def test_seed_size_error_continues_along_its_tangent_beyond_the_limit():
    # One truth, cell (1, 0), anchor 1 (2.2 x 3 cells) responsible.
    boxes = np.array([[[0.3, 0.7, 1.0, 0.9]]], np.float32)
    labels = np.array([[0]], np.int32)
    w, p, weight = 1.0 * 2, ANCHORS_CELLS[1, 0], 2 - 1.0 * 0.9
    limit = np.log(max(MAX_PREDICTED_CELLS, 2 * w) / p)
    loss = YoloV2Loss(num_classes=1, anchors=ANCHORS)

    def box_value_and_grad(t_w):
        raw = np.zeros((1, 2, 2, 3, 6), np.float32)
        raw[0, 1, 0, 1, 2] = t_w
        x = tf.constant(raw)
        with tf.GradientTape() as tape:
            tape.watch(x)
            box = loss.components({"boxes": boxes, "labels": labels}, x)["box"]
        return float(box), float(tape.gradient(box, x)[0, 1, 0, 1, 2])

    def exact(t_w):  # the seed's (w - p e^t)² term and its derivative
        h_term = (0.9 * 2 - ANCHORS_CELLS[1, 1]) ** 2
        xy = (0.3 * 2 - 0 - 0.5) ** 2 + (0.7 * 2 - 1 - 0.5) ** 2
        w_hat = p * np.exp(t_w)
        return (weight * ((w - w_hat) ** 2 + h_term + xy),
                2 * weight * (w_hat - w) * w_hat)

    for t_w in (0.3, 2.0, limit - 0.01):  # exact inside the limit
        value, grad = box_value_and_grad(t_w)
        assert value == pytest.approx(exact(t_w)[0], rel=1e-5)
        assert grad == pytest.approx(exact(t_w)[1], rel=1e-4)
    at_limit, slope = exact(limit)
    for t_w in (limit + 1.0, 50.0, 1e4):  # tangent: finite, pulling t_w down
        value, grad = box_value_and_grad(t_w)
        assert value == pytest.approx(at_limit + slope * (t_w - limit), rel=1e-4)
        assert grad == pytest.approx(slope, rel=1e-4) and grad > 0


def test_decoded_boxes_are_finite_for_huge_raw_outputs():
    decode = YoloV2Decode(anchors=ANCHORS, bounding_box_format="xyxy")
    for value in (1e4, 100.0, 89.0, -1e4, 0.0):
        raw = np.full((1, 2, 2, A, DEPTH), value, np.float32)
        out = decode(raw)
        for key, tensor in out.items():
            assert np.all(np.isfinite(tensor.numpy())), (value, key)
    # The clip: t_w beyond MAX_LOG_SCALE decodes as MAX_LOG_SCALE.
    raw = np.zeros((1, 2, 2, A, DEPTH), np.float32)
    raw[0, 0, 0, 0, 2] = 1e4
    out = YoloV2Decode(anchors=ANCHORS)(raw)
    assert float(out["boxes"][0, 0, 2]) == pytest.approx(
        ANCHORS_CELLS[0, 0] * np.exp(MAX_LOG_SCALE) / 2, rel=1e-5)


@pytest.mark.parametrize("compat, jit_compile", [
    (False, False), (True, False),
    # XLA compiles the conv net once per batch shape: minutes on 2 cores.
    pytest.param(False, True, marks=pytest.mark.slow),
    pytest.param(True, True, marks=pytest.mark.slow)],
    ids=["seed", "darknet", "seed-xla", "darknet-xla"])
def test_fit_on_padded_batch_with_changing_box_count(compat, jit_compile):
    from keras_yolo.models.small_v2 import small_v2
    keras.utils.set_random_seed(0)
    model = small_v2(num_classes=3, num_anchors=A, input_size=64, width=2,
                     passthrough_filters=2)
    loss = YoloV2Loss(num_classes=3, anchors=ANCHORS, darknet_compat=compat,
                      count_seen=False)
    # Learning rate 0: fit's loss must equal the eager loss of each batch
    # (batch normalisation uses the batch statistics in both).
    model.compile(keras.optimizers.SGD(0.0), loss=loss,
                  jit_compile=jit_compile)
    ds = padded_batch_dataset(64, [1, 3, 5, 0, 2], batch_size=2)
    assert ds.element_spec[1]["boxes"].shape.as_list() == [None, None, 4]
    assert [tuple(y["labels"].shape) for _, y in ds] == [(2, 3), (2, 5), (1, 2)]
    history = model.fit(ds, epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(
        eager_epoch_loss(loss, model, ds), rel=1e-5)


def test_fit_under_mixed_float16():
    from keras_yolo.models.small_v2 import small_v2
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = small_v2(num_classes=3, num_anchors=A, input_size=64, width=2,
                         passthrough_filters=2)
    finally:
        keras.config.set_dtype_policy("float32")
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    loss = YoloV2Loss(num_classes=3, anchors=ANCHORS)
    model.compile(keras.optimizers.SGD(0.0), loss=loss)
    ds = padded_batch_dataset(64, [1, 3, 5, 0, 2], batch_size=2)
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert history.history["loss"][0] == pytest.approx(
        eager_epoch_loss(loss, model, ds), rel=1e-5)
