"""Run directories, progress lines and result files.

A run directory holds everything a job produced:

    config.json      arguments of the run
    history.jsonl    one JSON line per epoch (loss, lr, val_map, seconds)
    metrics.json     final metrics and timings ("finished": true when done)
    backup/          resumable state while running (training.resume)
    model.keras      the trained model (EMA weights when EMA is on)
    best.weights.h5  weights of the best validation mAP@0.5
    results.csv/png  loss terms, learning rates and mAP per epoch
    pr_curve.png, confusion_matrix.png, val_predictions.png   final eval
    tensorboard/     TensorBoard logs (training.records)
"""

import datetime
import json
import logging
import os
import sys
import time

import keras
import numpy as np

_logger = logging.getLogger("training")


def setup_logging(level=logging.INFO):
    """One plain `time level message` line per event on stderr."""
    for name in ("training", "serving", "keras_yolo"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(
                "%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def make_run_dir(out=None, root="runs", prefix="train"):
    """`out` if given, else `root/<prefix>-YYYYmmdd-HHMMSS`; created."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join(root, f"{prefix}-{stamp}")
    os.makedirs(out, exist_ok=True)
    return os.path.abspath(out)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "numpy"):
        return _plain(value.numpy())
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def write_json(path, data):
    """Writes `data` as indented JSON atomically (temp file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_plain(data), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def read_history(run_dir):
    """Epoch records of `history.jsonl`, the last record of each epoch."""
    path = os.path.join(run_dir, "history.jsonl")
    records = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    records[record["epoch"]] = record
    return [records[k] for k in sorted(records)]


def write_history(run_dir, records):
    """Replaces `history.jsonl` with `records`, atomically."""
    path = os.path.join(run_dir, "history.jsonl")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


# What a run writes (besides config.json): a new run in the directory of an
# older one removes them first, so that none of the old run's files sits
# beside the new run's partial ones.
RUN_OUTPUTS = ("metrics.json", "model.keras", "model.decode.json",
               "best.weights.h5", "final.weights.h5", "history.jsonl",
               "results.csv", "results.png", "pr_curve.png",
               "confusion_matrix.png", "val_predictions.png",
               "class_names.json", "evaluate.json", "tensorboard", "backup")


def clear_run_outputs(run_dir):
    """Removes `RUN_OUTPUTS` of an older run from `run_dir`; metrics.json
    (the "finished" mark) first, so an interrupted clean-up is redone."""
    import shutil

    for name in RUN_OUTPUTS:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def save_model_atomic(model, path):
    """`model.save(path)` through a temporary file and a rename."""
    tmp = os.path.join(os.path.dirname(path),
                       f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class RunLogger(keras.callbacks.Callback):
    """Logs one progress line per epoch (and every `log_every` steps) and
    appends the epoch's logs to `run_dir/history.jsonl`."""

    def __init__(self, run_dir, epochs, log_every=0):
        super().__init__()
        self.run_dir = run_dir
        self.epochs = epochs
        self.log_every = int(log_every or 0)
        self._start = self._epoch_start = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch_end = time.perf_counter()
        if self.log_every and (batch + 1) % self.log_every == 0:
            _logger.info("epoch %d step %d loss %.4f", self._epoch + 1,
                         batch + 1, float((logs or {}).get("loss", np.nan)))

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        seconds = time.perf_counter() - self._epoch_start
        step_seconds = getattr(self, "_last_batch_end", 0) - self._epoch_start
        elapsed = time.perf_counter() - self._start
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate
        record = {"epoch": epoch + 1, "seconds": round(seconds, 3),
                  "train_seconds": round(max(step_seconds, 0.0), 3),
                  "lr": float(np.asarray(lr)),
                  **{k: float(v) for k, v in logs.items()
                     if np.ndim(v) == 0}}
        with open(os.path.join(self.run_dir, "history.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        done = epoch + 1 - getattr(self, "_first_epoch", 0)
        left = self.epochs - (epoch + 1)
        eta = elapsed / max(done, 1) * left
        extra = "".join(f" {k} {logs[k]:.4f}" for k in ("val_map50", "val_map")
                        if k in logs)
        _logger.info("epoch %d/%d loss %.4f lr %.2e%s  %.1f s/epoch, eta "
                     "%.0f s", epoch + 1, self.epochs,
                     float(logs.get("loss", np.nan)), record["lr"], extra,
                     seconds, eta)


class TimeBudget(keras.callbacks.Callback):
    """Keeps training within `seconds` of wall time (from the start of
    `fit`): after each epoch it projects, from the last epoch's duration,
    how many epochs still fit; it stops after the last that fits and, given
    an adjustable `schedule`, shortens the schedule to end there, so the
    learning rate still decays fully on a slow machine."""

    def __init__(self, seconds, epochs, steps_per_epoch, schedule=None):
        super().__init__()
        self.seconds = float(seconds)
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.schedule = schedule
        self.stopped_epoch = None
        self.planned_epochs = self.epochs

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        self._first_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        if getattr(self, "_first_epoch", None) is None:
            self._first_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        last = now - self._epoch_start
        fit = int((self.seconds - (now - self._start)) // max(last, 1e-9))
        if epoch == self._first_epoch and fit > 0:
            # The first epoch includes tracing (and compiling): plan from
            # the second one on, unless even one more would not fit.
            return
        planned = min(self.planned_epochs, epoch + 1 + max(fit, 0))
        if planned < self.planned_epochs:
            self.planned_epochs = planned
            if self.schedule is not None and getattr(
                    self.schedule, "adjustable", False):
                self.schedule.set_total_steps(planned * self.steps_per_epoch)
            _logger.info("time budget %.0f s: training ends after epoch %d "
                         "(%.1f s/epoch)", self.seconds, planned, last)
        if epoch + 1 >= self.planned_epochs and epoch + 1 < self.epochs:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True

    def get_resume_state(self):
        return {"planned_epochs": self.planned_epochs}

    def set_resume_state(self, state):
        self.planned_epochs = int(state["planned_epochs"])
        if self.planned_epochs < self.epochs and self.schedule is not None \
                and getattr(self.schedule, "adjustable", False):
            self.schedule.set_total_steps(
                self.planned_epochs * self.steps_per_epoch)
