"""YoloV5Loss and YoloV5Decode when the batch size and box count are known
only at run time (issue #18): graph and XLA equal eager, and `model.fit` on a
`padded_batch` dataset whose box count changes from batch to batch."""

import numpy as np
import pytest
import tensorflow as tf

import keras
from keras_yolo.anchors import YOLOV5_ANCHORS
from keras_yolo.layers import YoloV5Decode
from keras_yolo.losses import YoloV5Loss

STRIDES = (8, 16, 32)
NUM_CLASSES = 3
IMAGE = 64
CHANNELS = 5 + NUM_CLASSES
# Anchors scaled to the tiny input, so truths match anchors at every level.
ANCHORS = (np.asarray(YOLOV5_ANCHORS) * IMAGE / 320).tolist()


def _inputs(batch, rows, real, seed=0):
    rng = np.random.default_rng(seed)
    raw = [rng.normal(0, 1.5, (batch, IMAGE // s, IMAGE // s, 3, CHANNELS))
           .astype(np.float32) for s in STRIDES]
    boxes = np.zeros((batch, rows, 4), np.float32)
    labels = np.full((batch, rows), -1, np.int32)
    for b in range(batch):
        n = real[b]
        boxes[b, :n, :2] = rng.uniform(0.05, 0.95, (n, 2))
        boxes[b, :n, 2:] = rng.uniform(0.05, 0.5, (n, 2))
        labels[b, :n] = rng.integers(0, NUM_CLASSES, n)
    return raw, boxes, labels


def _signature():
    return [tf.TensorSpec((None, None, 4), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
            [tf.TensorSpec((None, IMAGE // s, IMAGE // s, 3, CHANNELS),
                           tf.float32) for s in STRIDES]]


def value_and_grads(loss, boxes, labels, levels):
    """`[total, box, obj, cls]` and the gradients of the total w.r.t. the
    levels, from one evaluation (a training step's: it advances the loss's
    state)."""
    with tf.GradientTape() as tape:
        tape.watch(levels)
        total, parts = loss.compute_terms(
            {"boxes": boxes, "labels": labels}, levels)
    return ([total, parts["box"], parts["obj"], parts["cls"]],
            tape.gradient(total, levels))


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_loss_with_unknown_batch_and_box_count_equals_eager(jit):
    loss = YoloV5Loss(num_classes=NUM_CLASSES, anchors=ANCHORS,
                      fl_gamma=1.5, label_smoothing=0.1)
    step = tf.function(lambda b, l, p: value_and_grads(loss, b, l, p),
                       input_signature=_signature(), jit_compile=jit)
    # Two box counts, two batch sizes, one trace: the signature is None.
    # XLA compiles once per concrete shape, so it gets one of the two.
    cases = ((2, [3, 0], 5, 0), (3, [7, 1, 4], 9, 1))
    for batch, real, rows, seed in cases[1:] if jit else cases:
        raw, boxes, labels = _inputs(batch, rows, real, seed)
        levels = [tf.constant(r) for r in raw]
        expected, expected_grads = value_and_grads(
            loss, tf.constant(boxes), tf.constant(labels), levels)
        got, grads = step(boxes, labels, levels)
        np.testing.assert_allclose([float(v) for v in got],
                                   [float(v) for v in expected], rtol=2e-6)
        for g, e in zip(grads, expected_grads):
            np.testing.assert_allclose(g.numpy(), e.numpy(), atol=1e-7,
                                       rtol=1e-5)
        # The padding count does not matter: three more padded rows.
        padded = (np.pad(boxes, ((0, 0), (0, 3), (0, 0))),
                  np.pad(labels, ((0, 0), (0, 3)), constant_values=-1))
        again, _ = step(*padded, levels)
        np.testing.assert_allclose([float(v) for v in again],
                                   [float(v) for v in got], rtol=1e-6)
    assert step.experimental_get_tracing_count() == 1


def test_decode_with_unknown_batch_and_grid_equals_eager():
    decode = YoloV5Decode(bounding_box_format="rel_xyxy")
    signature = [[tf.TensorSpec((None, None, None, 3, CHANNELS), tf.float32)
                  for _ in STRIDES]]
    graph = tf.function(decode, input_signature=signature)
    xla = tf.function(decode, input_signature=signature, jit_compile=True)
    for batch in (1, 3):
        raw, _, _ = _inputs(batch, 1, [0] * batch, seed=batch)
        expected = decode(raw)
        for fn in (graph, xla):
            got = fn([tf.constant(r) for r in raw])
            for key in expected:
                np.testing.assert_allclose(got[key].numpy(),
                                           expected[key].numpy(), atol=2e-6)
    assert expected["boxes"].shape == (3, 3 * (64 + 16 + 4), 4)


def test_fit_on_padded_batch_with_changing_box_count():
    from keras_yolo.models.small_v5 import small_v5

    keras.utils.set_random_seed(0)
    model = small_v5(num_classes=NUM_CLASSES, input_size=IMAGE,
                     filters=(4, 4, 8, 8, 16))
    rng = np.random.default_rng(0)
    counts = [1, 5, 2, 0, 3, 6]

    def generator():
        for n in counts:
            boxes = np.concatenate([rng.uniform(0.1, 0.9, (n, 2)),
                                    rng.uniform(0.1, 0.4, (n, 2))], -1)
            yield (rng.uniform(0, 1, (IMAGE, IMAGE, 3)).astype(np.float32),
                   {"boxes": boxes.astype(np.float32),
                    "labels": rng.integers(0, NUM_CLASSES, n).astype(
                        np.int32)})

    spec = (tf.TensorSpec((IMAGE, IMAGE, 3), tf.float32),
            {"boxes": tf.TensorSpec((None, 4), tf.float32),
             "labels": tf.TensorSpec((None,), tf.int32)})
    ds = tf.data.Dataset.from_generator(generator, output_signature=spec)
    # padded_batch pads each batch to its own longest row count: M is 5,
    # 3 and 6 in turn, and None when the step is traced.
    ds = ds.padded_batch(2, padding_values=(0.0, {"boxes": 0.0,
                                                  "labels": -1})).cache()
    assert [int(y["labels"].shape[1]) for _, y in ds] == [5, 2, 6]
    model.compile(keras.optimizers.SGD(1e-2),
                  loss=YoloV5Loss(num_classes=NUM_CLASSES, anchors=ANCHORS),
                  jit_compile=False)
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["invalid_boxes"] == [0.0]
