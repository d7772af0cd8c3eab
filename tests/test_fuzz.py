"""Hostile inputs for every objective and decoder: finite values, masked rows that change nothing.

Raw outputs of any finite size (zeros, +-50, +-1e4 logits) and hostile but valid ground truth (no
boxes, one-pixel and image-sized boxes, boxes on the border, ten truths in one cell) must give a
finite loss and finite gradients; invalid rows (label out of range, NaN, empty or off-image boxes)
must be masked under XLA (the loss equals the loss without them) and raise eagerly.

Run as a script for the whole probe with its counts:
    .venv/bin/python tests/test_fuzz.py [--dtypes float32 float16 bfloat16] [--eager]
"""

import itertools
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_yolo import layers, losses
from keras_yolo.assign.groundtruth import GroundTruthError

IMAGE = 64
CLASSES = 3
ROWS = 12

SETUPS = {
    "v1": lambda: losses.YoloV1Loss(num_classes=CLASSES, grid_size=4, boxes_per_cell=2),
    "v1_darknet": lambda: losses.YoloV1Loss(num_classes=CLASSES, grid_size=4, boxes_per_cell=2,
                                            darknet_compat=True),
    "v2": lambda: losses.YoloV2Loss(num_classes=CLASSES),
    "v2_darknet": lambda: losses.YoloV2Loss(num_classes=CLASSES, darknet_compat=True),
    "v3": lambda: losses.YoloV3Loss(num_classes=CLASSES),
    "v3_darknet": lambda: losses.YoloV3Loss(num_classes=CLASSES, darknet_compat=True),
    "v4": lambda: losses.YoloV4Loss(num_classes=CLASSES),
    "v4_darknet": lambda: losses.YoloV4Loss(num_classes=CLASSES, darknet_compat=True),
    "v5": lambda: losses.YoloV5Loss(num_classes=CLASSES),
}

DECODERS = {
    "v1": lambda: layers.YoloV1Decode(num_classes=CLASSES, grid_size=4, boxes_per_cell=2),
    "v2": lambda: layers.YoloV2Decode(),
    "v3": lambda: layers.YoloV3Decode(num_classes=CLASSES),
    "v4": lambda: layers.YoloV4Decode(num_classes=CLASSES),
    "v5": lambda: layers.YoloV5Decode(num_classes=CLASSES),
}


def prediction_shapes(version, batch=2):
    if version == "v1":
        return [(batch, 4, 4, 2 * 5 + CLASSES)]
    if version == "v2":
        return [(batch, IMAGE // 32, IMAGE // 32, 5, 5 + CLASSES)]
    return [(batch, IMAGE // s, IMAGE // s, 3, 5 + CLASSES) for s in (8, 16, 32)]


def predictions(version, scale, seed=0, batch=2):
    rng = np.random.default_rng(seed)
    out = []
    for shape in prediction_shapes(version, batch):
        if scale == "zeros":
            value = np.zeros(shape)
        elif scale == "normal50":
            value = rng.normal(0.0, 50.0, shape)
        else:
            value = float(scale) * rng.choice([-1.0, 1.0], shape)
        out.append(value.astype(np.float32))
    return out


def y_pred_arg(version, preds):
    return preds[0] if version in ("v1", "v2") else preds


# Valid, hostile ground truth: (boxes in rel_center_xywh, labels) for image 0; image 1 gets one box.
GROUND_TRUTH = {
    "no_boxes_at_all": None,
    "empty": ([], []),
    "one_pixel": ([[0.5, 0.5, 1 / IMAGE, 1 / IMAGE]], [0]),
    "sub_pixel": ([[0.3, 0.7, 0.1 / IMAGE, 0.1 / IMAGE]], [1]),
    "image_sized": ([[0.5, 0.5, 1.0, 1.0]], [2]),
    "on_the_border": ([[0.0, 0.0, 0.2, 0.2], [1.0, 1.0, 0.2, 0.2], [0.999, 0.001, 0.05, 0.05]], [0, 1, 2]),
    "ten_in_one_cell": ([[0.52, 0.52, 0.1, 0.1]] * 10, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]),
    "thin": ([[0.5, 0.5, 0.9, 1 / IMAGE], [0.5, 0.5, 1 / IMAGE, 0.9]], [0, 1]),
    "partly_outside": ([[0.95, 0.5, 0.3, 0.3]], [1]),
}

# Invalid rows: masked in a compiled step, an error eagerly.
INVALID_ROWS = {
    "label_too_large": ([0.5, 0.5, 0.2, 0.2], CLASSES),
    "label_huge": ([0.5, 0.5, 0.2, 0.2], 2**30),
    "nan_box": ([np.nan, 0.5, 0.2, 0.2], 0),
    "inf_box": ([0.5, np.inf, 0.2, 0.2], 1),
    "negative_size": ([0.5, 0.5, -0.2, 0.2], 0),
    "zero_size": ([0.5, 0.5, 0.0, 0.2], 2),
    "wholly_outside": ([2.5, 0.5, 0.2, 0.2], 1),
}


def ground_truth(case, extra_rows=()):
    boxes = np.zeros((2, ROWS, 4), np.float32)
    labels = np.full((2, ROWS), -1, np.int32)
    if GROUND_TRUTH[case] is None:
        return {"boxes": boxes, "labels": labels}
    b, l = GROUND_TRUTH[case]
    rows = [(box, label) for box, label in zip(b, l)] + list(extra_rows)
    for j, (box, label) in enumerate(rows):
        boxes[0, j], labels[0, j] = box, label
    boxes[1, 0], labels[1, 0] = [0.25, 0.25, 0.3, 0.2], 1
    return {"boxes": boxes, "labels": labels}


def loss_and_grads_fn(loss, version, jit_compile=True):
    def run(y_true, preds):
        with tf.GradientTape() as tape:
            tape.watch(preds)
            value = loss(y_true, y_pred_arg(version, preds))
        return value, tape.gradient(value, preds)
    return tf.function(run, jit_compile=jit_compile, reduce_retracing=True)


def version_of(setup):
    return setup.split("_")[0]


def probe(setup, cases, scales, dtype=tf.float32, eager=False):
    """Counts over every case: tried, non-finite (loss or gradient), crashed."""
    version = version_of(setup)
    loss = SETUPS[setup]()
    run = loss_and_grads_fn(loss, version, jit_compile=not eager)
    counts = dict(tried=0, nonfinite=0, crashed=0)
    failures = []
    for case, scale in itertools.product(cases, scales):
        counts["tried"] += 1
        preds = [tf.cast(p, dtype) for p in predictions(version, scale)]
        try:
            value, grads = run(ground_truth(case), preds)
        except Exception as error:  # noqa: BLE001 - the probe counts every kind of failure
            counts["crashed"] += 1
            failures.append((case, scale, f"{type(error).__name__}: {str(error)[:200]}"))
            continue
        finite = bool(np.isfinite(np.float64(value))) and all(
            np.all(np.isfinite(np.asarray(g, np.float64))) for g in grads if g is not None)
        if not finite:
            counts["nonfinite"] += 1
            failures.append((case, scale, f"loss {float(value)}"))
    return counts, failures


SCALES = ["zeros", 20.0, -20.0, 50.0, -50.0, 90.0, -100.0, 1e4, -1e4, "normal50"]


@pytest.mark.parametrize("setup", list(SETUPS))
def test_losses_and_gradients_are_finite_under_xla(setup):
    counts, failures = probe(setup, list(GROUND_TRUTH), SCALES)
    assert not failures, failures[:5]
    assert counts["tried"] == len(GROUND_TRUTH) * len(SCALES)


@pytest.mark.slow
@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_losses_are_finite_in_half_precision(setup, dtype):
    counts, failures = probe(setup, list(GROUND_TRUTH), SCALES, dtype=dtype)
    assert not failures, failures[:5]


@pytest.mark.slow
@pytest.mark.parametrize("setup", list(SETUPS))
def test_losses_are_finite_eagerly(setup):
    counts, failures = probe(setup, list(GROUND_TRUTH), SCALES, eager=True)
    assert not failures, failures[:5]


@pytest.mark.parametrize("setup", list(SETUPS))
def test_invalid_rows_are_masked_under_xla_and_raise_eagerly(setup):
    version = version_of(setup)
    loss = SETUPS[setup]()
    run = loss_and_grads_fn(loss, version)
    preds = [tf.constant(p) for p in predictions(version, "normal50", seed=1)]
    preds = [p / 25.0 for p in preds]   # ordinary logits
    clean, clean_grads = run(ground_truth("on_the_border"), preds)
    dirty_truth = ground_truth("on_the_border", extra_rows=list(INVALID_ROWS.values()))
    dirty, dirty_grads = run(dirty_truth, preds)
    np.testing.assert_allclose(float(dirty), float(clean), rtol=1e-6)
    for a, b in zip(dirty_grads, clean_grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    for name, row in INVALID_ROWS.items():
        with pytest.raises(GroundTruthError, match="image 0 row 3"):
            loss(ground_truth("on_the_border", extra_rows=[row]), y_pred_arg(version, preds))


@pytest.mark.parametrize("version", list(DECODERS))
@pytest.mark.parametrize("scale", [50.0, 1e4, -1e4, "normal50"])
def test_decoders_never_emit_non_finite_boxes(version, scale):
    decode = DECODERS[version]()
    preds = predictions(version, scale, seed=2)
    out = tf.function(lambda p: decode(p), jit_compile=True)(y_pred_arg(version, preds))
    for key in ("boxes", "objectness", "class_probs"):
        if key in out:
            assert np.all(np.isfinite(np.asarray(out[key]))), (key, version, scale)


def main(argv):
    dtypes = {"float32": tf.float32, "float16": tf.float16, "bfloat16": tf.bfloat16}
    chosen = [dtypes[d] for d in (argv[argv.index("--dtypes") + 1:] if "--dtypes" in argv
                                   else ["float32"]) if d in dtypes]
    modes = [False, True] if "--eager" in argv else [False]
    total = dict(tried=0, nonfinite=0, crashed=0)
    for setup, dtype, eager in itertools.product(SETUPS, chosen, modes):
        counts, failures = probe(setup, list(GROUND_TRUTH), SCALES, dtype=dtype, eager=eager)
        for key in total:
            total[key] += counts[key]
        print(f"{setup:11s} {dtype.name:8s} {'eager' if eager else 'xla':5s} {counts}", flush=True)
        for failure in failures[:3]:
            print("    ", failure)
    print("total", total)


if __name__ == "__main__":
    main(sys.argv[1:])
