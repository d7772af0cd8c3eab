"""Callbacks guarding a run: stop on a non-finite loss or weight, and keep
the best checkpoint (atomically, finite weights only).

Example:
    >>> guard = NonFiniteGuard(backup=backup, best_path="runs/a/best.weights.h5")
    >>> best = BestCheckpoint("runs/a/best.weights.h5", monitor="val_map50")
    >>> model.fit(batches, callbacks=[best, backup, guard])
"""

import contextlib
import logging
import math
import os

import keras
import numpy as np
import tensorflow as tf

_logger = logging.getLogger("training")


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or weight; the message names the
    step, the loss terms and the last good checkpoint."""


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first step whose loss (or any loss term) is
    non-finite or that left a non-finite weight (a NaN gradient), raising
    `NonFiniteError` before any later callback can save the bad weights.

    Args:
        backup: the run's `training.resume.ResumableBackup` (named as the
            last good checkpoint), or None.
        best_path: the best-mAP weights file, named when it exists.
        check_weights: also check every trainable weight and optimizer
            slot (momentum, accumulated gradient, EMA) after each step (one
            fused reduction; catches a NaN gradient at its step).
    """

    def __init__(self, backup=None, best_path=None, check_weights=True):
        super().__init__()
        self.backup = backup
        self.best_path = best_path
        self.check_weights = bool(check_weights)
        self._finite = None
        self._epoch = 0

    def on_train_begin(self, logs=None):
        if self.check_weights:
            # The optimizer's slots too: an accumulated gradient reaches
            # the weights only at the next optimizer step.
            variables = list(self.model.trainable_variables) + [
                v for v in self.model.optimizer.variables
                if "float" in str(v.dtype)]

            @tf.function
            def all_finite():
                return tf.reduce_all(tf.stack(
                    [tf.reduce_all(tf.math.is_finite(v)) for v in variables]))

            self._finite = all_finite

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        scalars = {k: float(np.asarray(v)) for k, v in logs.items()
                   if np.ndim(v) == 0}
        bad = [k for k, v in scalars.items() if not math.isfinite(v)]
        weights_ok = True
        if self._finite is not None:
            weights_ok = bool(self._finite())
        if not bad and weights_ok:
            return
        self.model.stop_training = True
        step = int(self.model.optimizer.iterations.numpy())
        what = (f"non-finite {', '.join(bad)}" if bad
                else "non-finite weights or optimizer slots after the "
                "update (a NaN/Inf gradient)")
        terms = ", ".join(f"{k}={v:.6g}" for k, v in scalars.items())
        raise NonFiniteError(
            f"training stopped: {what} at epoch {self._epoch + 1} step "
            f"{batch + 1} (optimizer step {step}); epoch means so far: "
            f"{terms or 'none logged'}; {self.last_good()}")

    def last_good(self):
        parts = []
        if self.backup is not None and self.backup.last_saved is not None:
            epoch, step = self.backup.last_saved
            parts.append(f"last good checkpoint: {self.backup.path} "
                         f"(epoch {epoch + 1 if step else epoch}, "
                         f"{f'step {step}' if step else 'end'}; "
                         "rerun the same command to resume from it)")
        elif self.backup is not None:
            parts.append("no checkpoint was saved yet")
        if self.best_path and os.path.exists(self.best_path):
            parts.append(f"best weights: {self.best_path}")
        return "; ".join(parts) or "no checkpoint"


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights when `monitor` improves, atomically (temporary
    file + rename), and never a non-finite value or non-finite weights.

    Args:
        path: a `.weights.h5` file.
        monitor: a log key, e.g. `"val_map50"` (epochs without it skip).
        mode: `"max"` or `"min"`.
        weights_context: a function `model -> context manager` under which
            the saved weights are in the model (e.g. `training.ema_weights`).
    """

    def __init__(self, path, monitor="val_map50", mode="max",
                 weights_context=None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"`mode` must be 'max' or 'min'; got {mode!r}.")
        if not path.endswith(".weights.h5"):
            raise ValueError(f"`path` must end with .weights.h5; got {path!r}.")
        self.path = path
        self.monitor = monitor
        self.mode = mode
        self.weights_context = weights_context or (
            lambda model: contextlib.nullcontext())
        self.best = None
        self.best_epoch = None

    def _better(self, value):
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if not math.isfinite(value) or not self._better(value):
            return
        with self.weights_context(self.model):
            weights = self.model.get_weights()
            if not all(np.isfinite(w).all() for w in weights
                       if np.asarray(w).dtype.kind == "f"):
                _logger.warning("epoch %d: %s %.4f but non-finite weights; "
                                "%s kept", epoch + 1, self.monitor, value,
                                self.path)
                return
            tmp = self.path[:-len(".weights.h5")] + ".tmp.weights.h5"
            self.model.save_weights(tmp)
            os.replace(tmp, self.path)
        self.best, self.best_epoch = value, epoch + 1

    def get_resume_state(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def set_resume_state(self, state):
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")
