"""The multi-level anchor objectives (YoloV3Loss, YoloV4Loss) and their
decoders when the batch size, box count and grid are known only at run time
(issue #18), on hostile raw outputs in every float dtype (issue #13.1,
#13.3), and with invalid ground truth (issue #13.2)."""

import numpy as np
import pytest
import tensorflow as tf

import keras
from keras_yolo.assign.groundtruth import GroundTruthError
from keras_yolo.layers import YoloV3Decode, YoloV4Decode
from keras_yolo.grid import MAX_LOG_SCALE
from keras_yolo.losses import YoloV3Loss, YoloV4Loss
from keras_yolo.models.small_v3 import small_v3
from keras_yolo.models.small_v4 import small_v4
from keras_yolo.postprocess import non_max_suppression

STRIDES = (8, 16, 32)
C = 3
IMAGE = 64
# Small anchors for a 64 x 64 input (grids 8, 4, 2), as in test_v4.py.
ANCHORS = [[(6, 8), (10, 14), (14, 10)], [(18, 24), (24, 18), (28, 36)],
           [(40, 30), (48, 56), (60, 60)]]

# Per version: the loss, the decoder, its two modes and a tiny model.
VERSIONS = {
    "v3": dict(
        loss=YoloV3Loss, decode=YoloV3Decode,
        # The seed with every optional branch on, and darknet's.
        modes=lambda: [YoloV3Loss(C, anchors=ANCHORS, coord_iou_gate="prediction",
                                  truth_thresh=0.7),
                       YoloV3Loss(C, anchors=ANCHORS, darknet_compat=True)],
        model=lambda: small_v3(num_classes=C, input_size=IMAGE, filters=(4, 8, 8, 8, 8),
                               blocks=(1, 1, 1, 1, 1), neck_filters=(4, 8, 8))),
    "v4": dict(
        loss=YoloV4Loss, decode=YoloV4Decode,
        # The seed (CIoU, label smoothing), and AlexeyAB darknet's.
        modes=lambda: [YoloV4Loss(C, anchors=ANCHORS, label_smoothing=0.1),
                       YoloV4Loss(C, anchors=ANCHORS, darknet_compat=True)],
        model=lambda: small_v4(num_classes=C, input_shape=(IMAGE, IMAGE, 3), width=0.25)),
}
each_version = pytest.mark.parametrize("version", sorted(VERSIONS))


def make_case(batch, rows, real, seed=0, spread=1.5):
    """Raw outputs and `rows` truth rows per image, `real[b]` of them real."""
    rng = np.random.default_rng(seed)
    raw = [(spread * rng.normal(size=(batch, IMAGE // s, IMAGE // s, 3, 5 + C)))
           .astype(np.float32) for s in STRIDES]
    boxes = np.zeros((batch, rows, 4), np.float32)
    labels = np.full((batch, rows), -1, np.int32)
    for b, n in enumerate(real):
        boxes[b, :n, :2] = rng.uniform(0.05, 0.95, (n, 2))
        boxes[b, :n, 2:] = rng.uniform(0.05, 0.6, (n, 2))
        labels[b, :n] = rng.integers(0, C, n)
    return raw, boxes, labels


def both_modes(version):
    return VERSIONS[version]["modes"]()


def values_and_grads(losses, boxes, labels, levels):
    out = []
    for loss in losses:
        with tf.GradientTape() as tape:
            tape.watch(levels)
            parts = loss.components({"boxes": boxes, "labels": labels}, levels)
            total = tf.add_n(list(parts.values()))
        out.append(([total, parts["box"], parts["obj"], parts["cls"]],
                     tape.gradient(total, levels)))
    return out


SIGNATURE = [tf.TensorSpec((None, None, 4), tf.float32),
             tf.TensorSpec((None, None), tf.int32),
             [tf.TensorSpec((None, None, None, 3, 5 + C), tf.float32)] * 3]


def assert_same(got, want, rtol=2e-5):
    for (values, grads), (want_values, want_grads) in zip(got, want):
        np.testing.assert_allclose([float(v) for v in values],
                                   [float(v) for v in want_values], rtol=rtol)
        for g, w in zip(grads, want_grads):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4,
                                       atol=1e-6)


@each_version
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_loss_with_unknown_batch_box_count_and_grid_equals_eager(version, jit):
    losses = both_modes(version)
    step = tf.function(lambda b, l, p: values_and_grads(losses, b, l, p),
                       input_signature=SIGNATURE, jit_compile=jit)
    cases = ((2, [3, 0], 5, 0), (3, [7, 1, 4], 9, 1))
    # XLA compiles once per concrete shape: one case is enough there.
    for batch, real, rows, seed in cases[1:] if jit else cases:
        raw, boxes, labels = make_case(batch, rows, real, seed)
        levels = [tf.constant(r) for r in raw]
        want = values_and_grads(losses, tf.constant(boxes),
                                tf.constant(labels), levels)  # static shapes
        assert_same(step(boxes, labels, levels), want)
        if jit:
            continue  # (each new shape is one more slow XLA compile)
        # More padding rows change nothing.
        more = (np.pad(boxes, ((0, 0), (0, 4), (0, 0))),
                np.pad(labels, ((0, 0), (0, 4)), constant_values=-1))
        assert_same(step(*more, levels), want)
    assert step.experimental_get_tracing_count() == 1


@each_version
def test_unknown_anchor_or_channel_axis_is_named_with_the_fix(version):
    loss = VERSIONS[version]["loss"](C, anchors=ANCHORS)
    signature = SIGNATURE[:2] + [[tf.TensorSpec((None,) * 5, tf.float32)] * 3]
    step = tf.function(lambda b, l, p: loss({"boxes": b, "labels": l}, p),
                       input_signature=signature)
    with pytest.raises(ValueError, match=r"y_pred\[0\].*input_signature"):
        step.get_concrete_function()


@each_version
def test_decode_with_unknown_batch_and_grid_equals_eager(version):
    decode_class = VERSIONS[version]["decode"]
    decode = decode_class(anchors=ANCHORS, bounding_box_format="xyxy",
                          num_classes=C)
    signature = [[tf.TensorSpec((None, None, None, 3, 5 + C), tf.float32)] * 3]
    graph = tf.function(decode, input_signature=signature)
    xla = tf.function(decode, input_signature=signature, jit_compile=True)
    for batch in (1, 3):
        raw, _, _ = make_case(batch, 1, [0] * batch, seed=batch)
        want = decode(raw)
        for fn in (graph, xla):
            got = fn([tf.constant(r) for r in raw])
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5,
                                           atol=2e-6)
    assert want["boxes"].shape == (3, 3 * (64 + 16 + 4), 4)
    with pytest.raises(ValueError, match="num_classes=4"):
        decode_class(anchors=ANCHORS, num_classes=4)(raw)


@each_version
def test_huge_outputs_decode_to_finite_boxes_and_detections(version):
    raw, _, _ = make_case(1, 1, [0])
    raw[2][..., 2] = 1e4     # t_w: exp overflows float32 above 88.7
    raw[2][..., 3] = -1e4    # t_h: exp underflows to an empty box
    raw[2][..., 4:] = 50.0   # objectness and classes saturate at 1
    out = VERSIONS[version]["decode"](anchors=ANCHORS, num_classes=C)(raw)
    boxes = out["boxes"].numpy()
    assert np.isfinite(boxes).all()
    last = boxes[0, -3 * 4:].reshape(2, 2, 3, 4)  # the stride-32 level
    anchors = np.asarray(ANCHORS[2], np.float32)
    # Clipped to e^{±20} anchors: finite, positive.
    want_w = np.broadcast_to(anchors[:, 0] * np.exp(MAX_LOG_SCALE) / IMAGE,
                             (2, 2, 3))
    want_h = np.broadcast_to(anchors[:, 1] * np.exp(-MAX_LOG_SCALE) / IMAGE,
                             (2, 2, 3))
    np.testing.assert_allclose(last[..., 2], want_w, rtol=1e-5)
    np.testing.assert_allclose(last[..., 3], want_h, rtol=1e-5)
    detections = non_max_suppression(out, bounding_box_format="rel_center_xywh")
    assert int(detections["num_detections"][0]) > 0
    assert np.isfinite(detections["boxes"].numpy()).all()
    assert np.isfinite(detections["scores"].numpy()).all()


SCALES = ("zeros", 50.0, -50.0, 1e4, -1e4, "t_wh_90")


def hostile(scale, seed=3):
    raw, boxes, labels = make_case(2, 4, [3, 1], seed)
    rng = np.random.default_rng(seed)
    for r in raw:
        if scale == "zeros":
            r[:] = 0.0
        elif scale == "t_wh_90":
            r[..., 2:4] = 90.0
        else:
            r[:] = scale * rng.choice([-1.0, 1.0], r.shape)
    return raw, boxes, labels


@each_version
@pytest.mark.parametrize("dtype", ["float32", "float16", pytest.param(
    "bfloat16", marks=pytest.mark.slow)])
def test_hostile_outputs_give_finite_loss_and_gradients(version, dtype):
    losses = both_modes(version)
    for scale in SCALES:
        raw, boxes, labels = hostile(scale)
        for lab in (labels, np.full_like(labels, -1)):  # with and without boxes
            levels = [tf.cast(r, dtype) for r in raw]
            for values, grads in values_and_grads(losses, boxes, lab, levels):
                assert all(np.isfinite(float(v)) for v in values), (scale, values)
                for g in grads:
                    assert np.isfinite(tf.cast(g, tf.float32).numpy()).all(), scale


def test_t_w_beyond_the_clip_is_the_clip_with_finite_gradients():
    """t_w = +90 used to give a finite loss and a NaN gradient (exp overflow
    inside CIoU). Above MAX_LOG_SCALE the box is the clipped one: the same
    loss as at t_w = 20, and no gradient through the clipped size."""
    raw, boxes, labels = make_case(2, 4, [3, 1], seed=5, spread=1.0)
    at_90 = [r.copy() for r in raw]
    at_clip = [r.copy() for r in raw]
    for big, clip in zip(at_90, at_clip):
        big[..., 2], clip[..., 2] = 90.0, MAX_LOG_SCALE
    for loss in both_modes("v4"):
        (values, grads), = values_and_grads([loss], boxes, labels,
                                            [tf.constant(r) for r in at_90])
        (want, want_grads), = values_and_grads([loss], boxes, labels,
                                               [tf.constant(r) for r in at_clip])
        np.testing.assert_allclose([float(v) for v in values],
                                   [float(v) for v in want], rtol=1e-6)
        for g, w in zip(grads, want_grads):
            g, w = g.numpy(), w.numpy()
            assert np.isfinite(g).all()
            if not loss.darknet_compat:  # darknet's delta ignores the clip
                assert not g[..., 2].any()
            np.testing.assert_allclose(np.delete(g, 2, -1), np.delete(w, 2, -1),
                                       rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@each_version
def test_hostile_half_precision_outputs_are_finite_under_xla(version):
    losses = both_modes(version)
    step = tf.function(lambda b, l, p: values_and_grads(losses, b, l, p),
                       jit_compile=True)
    for scale in (1e4, -1e4, "t_wh_90"):
        raw, boxes, labels = hostile(scale)
        for values, grads in step(boxes, labels,
                                  [tf.cast(r, tf.float16) for r in raw]):
            assert all(np.isfinite(float(v)) for v in values), scale
            assert all(np.isfinite(g.numpy().astype(np.float32)).all()
                       for g in grads), scale


@each_version
def test_invalid_rows_raise_eagerly_and_are_padding_when_compiled(version):
    raw, boxes, labels = make_case(2, 6, [3, 2], seed=4, spread=1.0)
    # Pixel boxes: the loss passes the image size (grid x stride) to the
    # policy, so a box right of a 64-pixel image is caught too.
    pixel = np.concatenate([(boxes[..., :2] - boxes[..., 2:] / 2) * IMAGE,
                            (boxes[..., :2] + boxes[..., 2:] / 2) * IMAGE], -1)
    bad_rows = {3: ([70.0, 10.0, 80.0, 20.0], 0),   # wholly right of the image
                4: ([10.0, 10.0, 20.0, 20.0], C),   # label out of range
                5: ([np.nan, 1.0, 9.0, 9.0], 1)}    # NaN coordinate
    dirty_boxes, dirty_labels = pixel.copy(), labels.copy()
    for row, (box, label) in bad_rows.items():
        dirty_boxes[0, row], dirty_labels[0, row] = box, label
    levels = [tf.constant(r) for r in raw]
    # (Both modes on `rel_` boxes: tests/test_fuzz.py.)
    for loss in both_modes(version)[:1]:
        loss = VERSIONS[version]["loss"].from_config({**loss.get_config(),
                                       "bounding_box_format": "xyxy"})
        for row, (box, label) in bad_rows.items():
            one_boxes, one_labels = pixel.copy(), labels.copy()
            one_boxes[0, row], one_labels[0, row] = box, label
            with pytest.raises(GroundTruthError, match=f"image 0 row {row}"):
                loss({"boxes": one_boxes, "labels": one_labels}, levels)
        compiled = tf.function(lambda y, p, loss=loss: loss(y, p),
                               jit_compile=True)
        got = compiled({"boxes": dirty_boxes, "labels": dirty_labels}, levels)
        want = loss({"boxes": pixel, "labels": labels}, levels)
        assert float(got) == pytest.approx(float(want), rel=1e-6)


@each_version
def test_fit_on_padded_batch_with_changing_box_count(version):
    keras.utils.set_random_seed(0)
    model = VERSIONS[version]["model"]()
    rng = np.random.default_rng(0)
    counts = [1, 5, 2, 0, 3, 6]

    def generator():
        for i, n in enumerate(counts):
            boxes = np.concatenate([rng.uniform(0.1, 0.9, (n, 2)),
                                    rng.uniform(0.1, 0.4, (n, 2))], -1)
            labels = rng.integers(0, C, n)
            if i == 4:
                labels[0] = 7  # invalid: masked in the step and counted
            yield (rng.uniform(0, 1, (IMAGE, IMAGE, 3)).astype(np.float32),
                   {"boxes": boxes.astype(np.float32),
                    "labels": labels.astype(np.int32)})

    spec = (tf.TensorSpec((IMAGE, IMAGE, 3), tf.float32),
            {"boxes": tf.TensorSpec((None, 4), tf.float32),
             "labels": tf.TensorSpec((None,), tf.int32)})
    ds = tf.data.Dataset.from_generator(generator, output_signature=spec)
    # Each batch is padded to its own longest row count: M = 5, 2, 6 in
    # turn, unknown (None) when the train step is traced.
    ds = ds.padded_batch(2, padding_values=(0.0, {"boxes": 0.0,
                                                  "labels": -1})).cache()
    assert [int(y["labels"].shape[1]) for _, y in ds] == [5, 2, 6]
    model.compile(keras.optimizers.SGD(1e-3), jit_compile=False,
                  loss=VERSIONS[version]["loss"](C, anchors=ANCHORS))
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["invalid_boxes"] == [1.0]
