"""What a run shows and leaves to look at: a progress bar per epoch,
TensorBoard logs, `results.csv` / `results.png`, and at the end
`pr_curve.png`, `confusion_matrix.png`, `val_predictions.png` and a
per-class AP table (also in `metrics.json` under `per_class`).

    <run>/tensorboard/train, validation   Keras' TensorBoard: loss terms,
                                          learning rates, mAP (per epoch)
    <run>/tensorboard/images              validation predictions (grid)
    <run>/results.csv, results.png        one row / point per epoch

Example:
    >>> callbacks = [ProgressBar(steps, batch_size), LearningRates(),
    ...              ResultsWriter(run_dir), tensorboard(run_dir)]
"""

import csv
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from training import plots
from training import run as run_lib

_logger = logging.getLogger("training")

# Columns of results.csv, in order (those a run logs; "epoch" first).
RESULT_COLUMNS = ("epoch", "loss", "box", "obj", "cls", "dfl", "lr",
                  "lr_bias", "momentum", "val_map50", "val_map", "val_map75",
                  "invalid_boxes", "seconds")

# Loss terms a YOLO loss may log (`YoloLoss.term_names`).
TERMS = ("box", "obj", "cls", "dfl")


class ProgressBar(keras.callbacks.Callback):
    """One progress bar per epoch: loss and the loss's logged terms (`box`,
    `obj`, `cls`; v8: `box`, `cls`, `dfl`; epoch means so far) and images per second; the epoch's mAP at its end when evaluated.
    Prints a single line per epoch where stdout is not a terminal."""

    def __init__(self, steps_per_epoch, batch_size, epochs):
        super().__init__()
        self.steps_per_epoch = int(steps_per_epoch)
        self.batch_size = int(batch_size)
        self.epochs = int(epochs)
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
        self._bar = keras.utils.Progbar(
            self.steps_per_epoch, unit_name="step", stateful_metrics=[
                "loss", *TERMS, "img/s", "val_map50",
                "val_map"])
        self._start = time.perf_counter()
        self._first = None

    def _values(self, batch, logs):
        if self._first is None:
            self._first = batch
        done = batch + 1 - self._first
        rate = done * self.batch_size / max(
            time.perf_counter() - self._start, 1e-9)
        values = [(k, float(logs[k])) for k in ("loss", *TERMS) if k in logs]
        return values + [("img/s", rate)]

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None and batch + 1 < self.steps_per_epoch:
            self._bar.update(batch + 1, self._values(batch, logs or {}),
                             finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        values = self._values(self.steps_per_epoch - 1, logs)
        values += [(k, float(logs[k])) for k in ("val_map50", "val_map")
                   if k in logs]
        self._bar.update(self.steps_per_epoch, values, finalize=True)


def learning_rates(optimizer):
    """`{"lr": ..., "lr_bias": ..., "momentum": ...}` at the optimizer's
    current step: the schedule's groups where it has them (the yolov5
    recipe's bias warmup and momentum ramp), else its one rate."""
    step = optimizer.iterations
    schedule = getattr(optimizer, "schedule", None) or getattr(
        optimizer, "_learning_rate", None)
    out = {}
    if callable(schedule):
        out["lr"] = float(np.asarray(schedule(step)))
        for name, key in (("bias_learning_rate", "lr_bias"),
                          ("momentum", "momentum")):
            method = getattr(schedule, name, None)
            if callable(method):
                out[key] = float(np.asarray(method(step)))
    else:
        out["lr"] = float(np.asarray(optimizer.learning_rate))
    return out


class LearningRates(keras.callbacks.Callback):
    """Adds the learning rates (and momentum) of the step the epoch ended
    at to the epoch's logs, for history, results and TensorBoard."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(learning_rates(self.model.optimizer))


def write_results(run_dir, history=None):
    """(Re)writes `results.csv` and `results.png` from the run's history
    (`history.jsonl`); returns the CSV path."""
    history = run_lib.read_history(run_dir) if history is None else history
    keys = {k for h in history for k in h}
    columns = [c for c in RESULT_COLUMNS if c in keys]
    path = os.path.join(run_dir, "results.csv")
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for h in history:
            writer.writerow(["" if h.get(c) is None else
                             (f"{h[c]:.6g}" if isinstance(h[c], float)
                              else h[c]) for c in columns])
    os.replace(tmp, path)
    plots.plot_results(history, os.path.join(run_dir, "results.png"))
    return path


class ResultsWriter(keras.callbacks.Callback):
    """Rewrites results.csv and results.png after every epoch (after the
    run's `RunLogger` appended it to history.jsonl)."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch, logs=None):
        try:
            write_results(self.run_dir)
        except Exception as error:  # noqa: BLE001 - a plot never stops a run
            _logger.warning("results.png: %s", error)


def tensorboard(run_dir):
    """Keras' TensorBoard callback writing to `<run>/tensorboard/`."""
    return keras.callbacks.TensorBoard(
        os.path.join(run_dir, "tensorboard"), write_graph=False,
        update_freq="epoch", profile_batch=0)


def _rel_xyxy(boxes, bounding_box_format, image_shape):
    from keras_yolo import boxes as box_ops

    return np.asarray(box_ops.convert(
        np.asarray(boxes, np.float32), bounding_box_format, "rel_xyxy",
        image_shape=image_shape))


def prediction_grid_of(detect, images, bounding_box_format, cols=4):
    """`plots.prediction_grid` of `detect(images)` (a detections dict)."""
    out = {k: np.asarray(v) for k, v in detect(images).items()}
    shape = tuple(int(s) for s in images.shape[1:3])
    return plots.prediction_grid(
        np.asarray(images), _rel_xyxy(out["boxes"], bounding_box_format,
                                      shape),
        out["classes"], out["num_detections"], cols=cols,
        scores=out["scores"], thickness=2, min_size=192)


def write_png(path, image):
    """Writes a `(H, W, 3)` uint8 array as PNG (TF's encoder)."""
    tf.io.write_file(path, tf.io.encode_png(image))


class PredictionImages(keras.callbacks.Callback):
    """On evaluation epochs (when `val_map50` is logged) draws the
    predictions on a few fixed validation images into TensorBoard
    (`<run>/tensorboard/images`, tag `val_predictions`).

    Args:
        run_dir: the run directory.
        images: `(N, H, W, 3)` validation images.
        detector: `images -> detections dict` (boxes in
            `bounding_box_format`); called under `weights_context`.
        weights_context: `model -> context manager` (the EMA weights).
    """

    def __init__(self, run_dir, images, detector, bounding_box_format,
                 weights_context):
        super().__init__()
        self.images = images
        self.detector = detector
        self.bounding_box_format = bounding_box_format
        self.weights_context = weights_context
        self.writer = tf.summary.create_file_writer(
            os.path.join(run_dir, "tensorboard", "images"))

    def on_epoch_end(self, epoch, logs=None):
        if "val_map50" not in (logs or {}):
            return
        with self.weights_context(self.model):
            grid = prediction_grid_of(self.detector, self.images,
                                      self.bounding_box_format)
        with self.writer.as_default():
            tf.summary.image("val_predictions", grid[None], step=epoch + 1)
        self.writer.flush()


def per_class(result, class_names):
    """`{name: {"ap50": ..., "ap": ...}}` from `coco_map`'s per-class lists
    (classes without ground truth: None)."""
    out = {}
    for c, name in enumerate(class_names):
        ap50 = result["per_class_map50"][c]
        ap = result["per_class_map"][c]
        out[str(name)] = {"ap50": None if ap50 < 0 else round(ap50, 6),
                          "ap": None if ap < 0 else round(ap, 6)}
    return out


def per_class_table(per_class_ap, result=None):
    """The per-class AP table as text (one row per class, then "all")."""
    width = max([len(n) for n in per_class_ap] + [5])
    lines = [f"{'class':<{width}}  {'AP@0.5':>8}  {'AP@.5:.95':>9}"]
    for name, ap in per_class_ap.items():
        cells = ["       -" if ap["ap50"] is None else f"{ap['ap50']:8.4f}",
                 "        -" if ap["ap"] is None else f"{ap['ap']:9.4f}"]
        lines.append(f"{name:<{width}}  {cells[0]}  {cells[1]}")
    if result is not None:
        lines.append(f"{'all':<{width}}  {result['map50']:8.4f}  "
                     f"{result['map']:9.4f}")
    return "\n".join(lines)


def class_names_or_ids(class_names, num_classes):
    if class_names is not None and len(class_names) == num_classes:
        return [str(n) for n in class_names]
    return [str(c) for c in range(num_classes)]


def write_final_records(run_dir, result, class_names):
    """After the final evaluation (`evaluate(..., return_per_class=True,
    return_pr_curve=True, return_confusion_matrix=True)`): writes
    pr_curve.png and confusion_matrix.png, adds `per_class` to `result`
    (in place, dropping the raw curves); returns the per-class table."""
    names = class_names_or_ids(class_names, len(result["per_class_map"]))
    result["per_class"] = per_class(result, names)
    recall = result.pop("pr_recall", None)
    precision = result.pop("pr_precision", None)
    try:
        if recall is not None:
            plots.plot_pr_curve(recall, precision, names,
                                os.path.join(run_dir, "pr_curve.png"))
        if "confusion_matrix" in result:
            plots.plot_confusion_matrix(
                result["confusion_matrix"], names,
                os.path.join(run_dir, "confusion_matrix.png"))
    except Exception as error:  # noqa: BLE001 - a plot never loses a run
        _logger.warning("final plots: %s", error)
    return (f"per-class AP ({result.get('num_images', 0)} validation "
            f"images):\n{per_class_table(result['per_class'], result)}")
