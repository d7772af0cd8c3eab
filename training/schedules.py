"""Learning-rate schedules: linear warmup, then cosine (or linear) decay.

    lr(s) = lr0 · (w0 + (1 − w0) · s / W)                               s < W
    lr(s) = lr0 · (f + (1 − f) · (1 + cos(π (s − W) / (T − W))) / 2)    cosine, s ≥ W
    lr(s) = lr0 · (1 − (1 − f) (s − W) / (T − W))                        linear, s ≥ W

`lr0` the peak rate, `W` warmup steps, `T` total steps, `f` the final
fraction (ultralytics' `lrf`, 0.01), `w0` the warmup start fraction. The
decay is per step (ultralytics steps per epoch; per step is smoother and
independent of the epoch length). Steps past `T` keep the final rate.
"""

import math

import keras
from keras import ops

SCHEDULES = ("cosine", "linear", "constant")


@keras.saving.register_keras_serializable(package="keras_yolo")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup then cosine / linear / constant decay (module formulas).

    Args:
        learning_rate: lr0, the peak rate.
        total_steps: T.
        warmup_steps: W (0: no warmup).
        decay: `"cosine"`, `"linear"` or `"constant"`.
        final_fraction: f, the last rate as a fraction of lr0.
        warmup_start: w0, the first warmup rate as a fraction of lr0.
        adjustable: keep T in a variable that `set_total_steps` can shorten
            during training (the time budget of `train` does, so a run cut
            short still ends its decay).

    Example:
        >>> schedule = WarmupDecay(0.01, total_steps=3000, warmup_steps=300)
        >>> keras.optimizers.SGD(schedule, momentum=0.937, nesterov=True)
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0,
                 decay="cosine", final_fraction=0.01, warmup_start=0.0,
                 adjustable=False):
        if decay not in SCHEDULES:
            raise ValueError(f"`decay` must be one of {SCHEDULES}; "
                             f"got {decay!r}.")
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"need 0 <= warmup_steps <= total_steps and total_steps >= 1; "
                f"got warmup_steps={warmup_steps}, total_steps={total_steps}.")
        if learning_rate <= 0:
            raise ValueError(
                f"`learning_rate` must be > 0; got {learning_rate}.")
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.final_fraction = float(final_fraction)
        self.warmup_start = float(warmup_start)
        self.adjustable = bool(adjustable)
        self._total = None
        if adjustable:
            import tensorflow as tf

            self._total = tf.Variable(float(total_steps), trainable=False,
                                      name="schedule_total_steps")

    def set_total_steps(self, total_steps):
        """Shortens (or lengthens) T of an `adjustable` schedule."""
        if self._total is None:
            raise ValueError("set_total_steps needs adjustable=True.")
        self.total_steps = max(int(total_steps), self.warmup_steps + 1)
        self._total.assign(float(self.total_steps))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr0, f = self.learning_rate, self.final_fraction
        warm = max(self.warmup_steps, 1)
        warmup = lr0 * (self.warmup_start
                        + (1.0 - self.warmup_start) * step / warm)
        total = self.total_steps if self._total is None else self._total
        span = ops.maximum(total - self.warmup_steps, 1.0)
        x = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "cosine":
            after = lr0 * (f + (1.0 - f) * (1.0 + ops.cos(math.pi * x)) / 2)
        elif self.decay == "linear":
            after = lr0 * (1.0 - (1.0 - f) * x)
        else:
            after = lr0 * ops.ones_like(x)
        if self.warmup_steps == 0:
            return after
        return ops.where(step < self.warmup_steps, warmup, after)

    def get_config(self):
        return {"learning_rate": self.learning_rate,
                "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay,
                "final_fraction": self.final_fraction,
                "warmup_start": self.warmup_start}
