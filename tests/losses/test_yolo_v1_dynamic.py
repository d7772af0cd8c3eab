"""YOLOv1 with sizes known only at run time, hostile inputs, checked truth.

Issue #18: batch size B and box count M unknown when the step is traced
(`padded_batch`, Keras' relaxed retracing). Issue #13: finite losses and
gradients for any raw output, invalid ground-truth rows raise eagerly and are
masked in compiled steps, decoded boxes always finite.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.assign.groundtruth import GroundTruthError
from keras_yolo.layers import YoloV1Decode
from keras_yolo.losses import YoloV1Loss
from v1_cases import gt, random_case, seed_loss_np

S, NB, C = 3, 2, 3
DEPTH = NB * 5 + C
TRUTH_SIGNATURE = [tf.TensorSpec((None, None, 4), tf.float32),
                   tf.TensorSpec((None, None), tf.int32)]


def value_and_grad(loss):
    def run(boxes, labels, raw):
        with tf.GradientTape() as tape:
            tape.watch(raw)
            value = loss({"boxes": boxes, "labels": labels}, raw)
        return value, tape.gradient(value, raw)
    return run


@pytest.mark.parametrize("compat", [False, True], ids=["seed", "darknet"])
def test_unknown_batch_and_box_count_match_static_shapes(compat):
    loss = YoloV1Loss(C, S, NB, darknet_compat=compat)
    run = value_and_grad(loss)
    signature = TRUTH_SIGNATURE + [tf.TensorSpec((None, S, S, DEPTH))]
    graph = tf.function(run, input_signature=signature)
    xla = tf.function(run, input_signature=signature, jit_compile=True)
    rng = np.random.default_rng(0)
    # One trace serves every (B, M): two different sizes through it.
    for batch, m in ((2, 3), (3, 7)):
        boxes, labels, raw = random_case(rng, batch, S, NB, C, m)
        args = (tf.constant(boxes), tf.constant(labels), tf.constant(raw))
        eager = run(*args)
        if not compat:  # the static value is itself the seed's formula
            want = sum(seed_loss_np(boxes, labels, raw, S, NB, C).values())
            assert float(eager[0]) == pytest.approx(want, rel=1e-5)
        for compiled in (graph, xla):
            value, grad = compiled(*args)
            assert float(value) == pytest.approx(float(eager[0]), rel=1e-5)
            np.testing.assert_allclose(grad, eager[1], rtol=1e-4, atol=1e-6)
    assert len(graph._list_all_concrete_functions()) == 1


def test_unknown_grid_size_is_checked_against_grid_size_at_run_time():
    loss = YoloV1Loss(C, S, NB)
    fn = tf.function(lambda b, l, r: loss({"boxes": b, "labels": l}, r),
                     input_signature=TRUTH_SIGNATURE + [
                         tf.TensorSpec((None, None, None, None))])
    rng = np.random.default_rng(1)
    boxes, labels, raw = random_case(rng, 2, S, NB, C, 4)
    want = sum(seed_loss_np(boxes, labels, raw, S, NB, C).values())
    assert float(fn(boxes, labels, raw)) == pytest.approx(want, rel=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"YoloV1Loss\(grid_size={S}.*\(batch, {S}, {S}"):
        fn(boxes, labels, np.zeros((2, S + 1, S + 1, DEPTH), np.float32))
    decode = tf.function(YoloV1Decode(C, S, NB), input_signature=[
        tf.TensorSpec((None, None, None, DEPTH))])
    np.testing.assert_allclose(decode(raw)["boxes"],
                               YoloV1Decode(C, S, NB)(raw)["boxes"], rtol=1e-6)


@pytest.mark.parametrize("compat", [False, True], ids=["seed", "darknet"])
def test_invalid_rows_raise_eagerly_and_change_nothing_under_xla(compat):
    loss = YoloV1Loss(C, S, NB, darknet_compat=compat)
    rng = np.random.default_rng(2)
    boxes, labels, raw = random_case(rng, 2, S, NB, C, 4)
    labels[:, 0] = 1  # a real row first in every image
    bad_boxes = np.concatenate([boxes, np.zeros((2, 3, 4), np.float32)], 1)
    bad_labels = np.concatenate([labels, np.full((2, 3), -1, np.int32)], 1)
    bad_boxes[0, 4], bad_labels[0, 4] = [0.5, 0.5, 0.2, 0.2], 99  # label >= C
    bad_boxes[1, 5], bad_labels[1, 5] = [np.nan, 0.5, 0.2, 0.2], 0  # NaN
    bad_boxes[0, 6], bad_labels[0, 6] = [0.5, 0.5, -0.2, 0.2], 2  # width < 0
    bad_boxes[1, 6] = [np.nan] * 4  # padding may hold anything
    run = tf.function(value_and_grad(loss), jit_compile=True)
    value, grad = run(tf.constant(bad_boxes), tf.constant(bad_labels),
                      tf.constant(raw))
    want, want_grad = run(tf.constant(boxes), tf.constant(labels),
                          tf.constant(raw))
    assert float(value) == pytest.approx(float(want), rel=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)
    with pytest.raises(GroundTruthError, match="image 0 row 4: field 'labels'"):
        loss(gt(bad_boxes, bad_labels), raw)
    bad_labels[0, 4] = 1
    with pytest.raises(GroundTruthError, match="image 0 row 6: field 'boxes'"):
        loss(gt(bad_boxes, bad_labels), raw)


HOSTILE = [50.0, -50.0, 1e4, -1e4, 0.0]


@pytest.mark.parametrize("options, dtype", [
    (dict(), "float32"), (dict(), "float16"),
    (dict(darknet_compat=True), "float32"),
    (dict(darknet_compat=True), "bfloat16"),
    (dict(darknet_compat=True, sqrt=False, softmax=True), "float16")],
    ids=lambda p: p if isinstance(p, str) else "-".join(
        f"{k}={v}" for k, v in p.items()) or "seed")
def test_hostile_raw_outputs_give_finite_loss_and_gradients(options, dtype):
    loss = YoloV1Loss(C, S, NB, **options)
    rng = np.random.default_rng(3)
    boxes, labels, raw = random_case(rng, 2, S, NB, C, 4)
    run = value_and_grad(loss)
    xla = tf.function(run, jit_compile=True)
    for value in HOSTILE:
        for truth in (labels, np.full_like(labels, -1)):
            for pattern in ("all", "one cell"):
                x = np.full_like(raw, value) if pattern == "all" else raw.copy()
                if pattern == "one cell":
                    x[0, 1, 1] = value
                args = (tf.constant(boxes), tf.constant(truth),
                        tf.constant(x, dtype))
                for fn in (run, xla):
                    total, grad = fn(*args)
                    grad = tf.cast(grad, tf.float32).numpy()
                    assert np.isfinite(float(total)), (value, pattern)
                    assert np.all(np.isfinite(grad)), (value, pattern)


def test_decoded_boxes_are_finite_for_huge_raw_outputs():
    for parametrization in ("logistic", "linear"):
        decode = YoloV1Decode(C, S, NB, bounding_box_format="xyxy",
                              image_shape=(64, 64),
                              parametrization=parametrization)
        for value in (1e30, -1e30, 1e4, 0.0):
            out = decode(np.full((1, S, S, DEPTH), value, np.float32))
            assert np.all(np.isfinite(out["boxes"].numpy())), value
    # Inside the clip the linear decoding is darknet's w = t_w² exactly.
    raw = np.zeros((1, S, S, DEPTH), np.float32)
    raw[0, 0, 0, 2] = 3.0
    out = YoloV1Decode(C, S, NB, parametrization="linear")(raw)
    assert float(out["boxes"][0, 0, 2]) == 9.0


def eager_epoch_loss(loss, model, ds):
    """The loss `fit` reports for one epoch of `ds` at learning rate 0: the
    eager loss of each batch, averaged with the batch sizes as weights."""
    values, sizes = [], []
    for images, y in ds:
        values.append(float(loss(y, model(images, training=True))))
        sizes.append(int(images.shape[0]))
    return np.average(values, weights=sizes)


def padded_batch_dataset(image_size, box_counts, batch_size, seed=0):
    """Images with a different number of boxes each, `padded_batch`ed so
    that M changes from batch to batch (and is None in the element spec)."""
    rng = np.random.default_rng(seed)
    images, truths = [], []
    for m in box_counts:
        images.append(rng.uniform(size=(image_size, image_size, 3)))
        truths.append({
            "boxes": np.concatenate([rng.uniform(0.1, 0.9, (m, 2)),
                                     rng.uniform(0.05, 0.5, (m, 2))], 1),
            "labels": rng.integers(0, C, m)})

    def gen():
        for image, truth in zip(images, truths):
            yield (image.astype(np.float32),
                   {"boxes": truth["boxes"].astype(np.float32),
                    "labels": truth["labels"].astype(np.int32)})

    spec = (tf.TensorSpec((image_size, image_size, 3), tf.float32),
            {"boxes": tf.TensorSpec((None, 4), tf.float32),
             "labels": tf.TensorSpec((None,), tf.int32)})
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
    return ds.padded_batch(batch_size, padding_values=(
        0.0, {"boxes": 0.0, "labels": -1}))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_on_padded_batch_with_changing_box_count(jit_compile):
    from keras_yolo.models.small_v1 import small_v1
    keras.utils.set_random_seed(0)
    model = small_v1(num_classes=C, grid_size=S, boxes_per_cell=NB,
                     input_size=32, filters=(4, 4, 4), hidden_units=8,
                     dropout=0.0, batch_norm_momentum=None)
    loss = YoloV1Loss(C, S, NB)
    # Learning rate 0: fit's loss must equal the eager loss of each batch.
    model.compile(keras.optimizers.SGD(0.0), loss=loss,
                  jit_compile=jit_compile)
    # M = 3, 5, then a last batch of one image with M = 2; XLA compiles
    # once per shape, so few batches keep the test short.
    ds = padded_batch_dataset(32, [1, 3, 5, 0, 2], batch_size=2)
    assert ds.element_spec[1]["boxes"].shape.as_list() == [None, None, 4]
    assert [tuple(y["labels"].shape) for _, y in ds] == [(2, 3), (2, 5), (1, 2)]
    history = model.fit(ds, epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(
        eager_epoch_loss(loss, model, ds), rel=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_fit_under_a_mixed_precision_policy(policy):
    from keras_yolo.models.small_v1 import small_v1
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(policy)
    try:
        model = small_v1(num_classes=C, grid_size=S, boxes_per_cell=NB,
                         input_size=32, filters=(4, 4, 4), hidden_units=8,
                         dropout=0.0, batch_norm_momentum=None)
    finally:
        keras.config.set_dtype_policy("float32")
    loss = YoloV1Loss(C, S, NB)
    model.compile(keras.optimizers.SGD(0.0), loss=loss)
    ds = padded_batch_dataset(32, [1, 3, 5, 0, 2], batch_size=2)
    history = model.fit(ds, epochs=1, verbose=0)
    # The convolutions compute in half precision (the head casts to float32).
    half = policy.split("_")[1]
    assert any(layer.compute_dtype == half for layer in model.layers)
    assert np.isfinite(history.history["loss"][0])
    assert history.history["loss"][0] == pytest.approx(
        eager_epoch_loss(loss, model, ds), rel=1e-5)
