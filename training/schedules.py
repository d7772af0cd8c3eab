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


# --- ultralytics yolov5 train.py: per-epoch decay, per-step warmup -----------

RECIPE_DECAYS = ("linear", "cosine", "sgdr", "constant")


def decay_factor(epoch, epochs, decay="linear", final_fraction=0.01,
                 restart_epochs=None, restart_mult=2.0):
    """train.py's `lf(epoch)`: the learning rate of `epoch` as a fraction of
    lr0 (numbers or tensors).

        linear:  (1 − e / E)(1 − f) + f
        cosine:  one_cycle(1, f, E)(e) = (1 − cos(π e / E)) / 2 · (f − 1) + 1
        sgdr:    cosine from 1 to f within each period, periods of
                 `restart_epochs` (default E / 3) growing by `restart_mult`
                 (Loshchilov & Hutter 2017, SGDR, eq. 5)
        constant: 1
    """
    if decay == "linear":
        return (1.0 - epoch / epochs) * (1.0 - final_fraction) + final_fraction
    if decay == "cosine":
        return ((1.0 - ops.cos(ops.cast(epoch, "float32") * math.pi / epochs))
                / 2.0 * (final_fraction - 1.0) + 1.0)
    if decay == "sgdr":
        first = restart_epochs or max(float(epochs) / 3.0, 1.0)
        t_cur, t_i = restart_position(epoch, first, restart_mult)
        return final_fraction + (1.0 - final_fraction) * (
            1.0 + ops.cos(math.pi * t_cur / t_i)) / 2.0
    if decay == "constant":
        return ops.ones_like(ops.cast(epoch, "float32"))
    raise ValueError(f"`decay` must be one of {RECIPE_DECAYS}; got {decay!r}.")


def restart_position(t, first_period, period_mult=2.0):
    """SGDR's `(T_cur, T_i)` at time `t` (epochs or steps): periods
    `T_i = T_0 · mult^i`; `T_cur` the time since the last restart."""
    t = ops.cast(t, "float32")
    if period_mult == 1.0:
        index = ops.floor(t / first_period)
        return t - index * first_period, first_period * ops.ones_like(t)
    # Start of period i: T_0 (mult^i − 1) / (mult − 1).
    index = ops.floor(ops.log(1.0 + t * (period_mult - 1.0) / first_period)
                      / math.log(period_mult))
    start = first_period * (period_mult ** index - 1.0) / (period_mult - 1.0)
    period = first_period * period_mult ** index
    # Float rounding at a boundary: move to the next period.
    over = t - start >= period
    start = ops.where(over, start + period, start)
    period = ops.where(over, period * period_mult, period)
    return t - start, period


@keras.saving.register_keras_serializable(package="keras_yolo")
class WarmRestarts(keras.optimizers.schedules.LearningRateSchedule):
    """SGDR (Loshchilov & Hutter 2017): cosine annealing restarted every
    `T_i = first_period · period_mult^i` steps.

        lr(t) = lr_min + (lr0 − lr_min)(1 + cos(π T_cur / T_i)) / 2

    with `lr_min = final_fraction · lr0` and `T_cur` the steps since the
    last restart.

    Example:
        >>> schedule = WarmRestarts(0.01, first_period=1000, period_mult=2)
        >>> keras.optimizers.SGD(schedule, momentum=0.937, nesterov=True)
    """

    def __init__(self, learning_rate, first_period, period_mult=2.0,
                 final_fraction=0.01):
        if first_period <= 0 or period_mult < 1:
            raise ValueError(
                "need first_period > 0 and period_mult >= 1; got "
                f"first_period={first_period}, period_mult={period_mult}.")
        self.learning_rate = float(learning_rate)
        self.first_period = float(first_period)
        self.period_mult = float(period_mult)
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        t_cur, t_i = restart_position(step, self.first_period,
                                      self.period_mult)
        f = self.final_fraction
        return self.learning_rate * (
            f + (1.0 - f) * (1.0 + ops.cos(math.pi * t_cur / t_i)) / 2.0)

    def get_config(self):
        return {"learning_rate": self.learning_rate,
                "first_period": self.first_period,
                "period_mult": self.period_mult,
                "final_fraction": self.final_fraction}


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV5Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """ultralytics yolov5 `train.py`'s learning rates, momentum and
    accumulation at each batch `ni` (the optimizer's `iterations`).

    After warmup the rate is `lr0 · lf(epoch − 1)` (`decay_factor`; see
    `factor` for the lag), constant within an epoch (train.py steps its
    LambdaLR once an epoch). During the
    `nw = max(round(warmup_epochs · nb), min_warmup_steps)` warmup batches
    (`ni <= nw`), with `x = ni / nw` (np.interp on `[0, nw]`):

        bias lr      = warmup_bias_lr + x (lr0 lf(epoch) − warmup_bias_lr)
        other lr     = x lr0 lf(epoch)
        momentum     = warmup_momentum + x (momentum − warmup_momentum)
        accumulate   = max(1, round(1 + x (nbs / batch − 1)))

    and after it `accumulate = max(1, round(nbs / batch))` (round half to
    even, as numpy). Calling the schedule gives the weights' rate (what
    Keras logs as the learning rate); `bias_learning_rate`, `momentum` and
    `accumulate` give the rest.

    Args:
        learning_rate: lr0.
        epochs: E, the run's epochs.
        steps_per_epoch: nb, batches per epoch.
        decay: "linear" (train.py's default), "cosine" (`--cos-lr`),
            "sgdr" or "constant".
        final_fraction: lrf.
        warmup_epochs, min_warmup_steps: nw as above (yolov5: 3, 100).
        warmup_bias_lr, warmup_momentum, momentum: hyp.scratch-low values.
        batch_size: images per batch (the global batch).
        nominal_batch_size: nbs, the images one optimizer step averages.
        restart_epochs, restart_mult: SGDR's first period and growth.

    Example:
        >>> s = YoloV5Schedule(0.01, epochs=300, steps_per_epoch=100,
        ...                    batch_size=16)
        >>> float(s.bias_learning_rate(0)), float(s.momentum(0))
        (0.1, 0.8)
    """

    def __init__(self, learning_rate=0.01, epochs=300, steps_per_epoch=1,
                 decay="linear", final_fraction=0.01, warmup_epochs=3.0,
                 min_warmup_steps=100, warmup_bias_lr=0.1,
                 warmup_momentum=0.8, momentum=0.937, batch_size=64,
                 nominal_batch_size=64, restart_epochs=None,
                 restart_mult=2.0, adjustable=False):
        if decay not in RECIPE_DECAYS:
            raise ValueError(f"`decay` must be one of {RECIPE_DECAYS}; "
                             f"got {decay!r}.")
        if epochs < 1 or steps_per_epoch < 1 or batch_size < 1:
            raise ValueError(
                "need epochs, steps_per_epoch and batch_size >= 1; got "
                f"{epochs}, {steps_per_epoch}, {batch_size}.")
        self.learning_rate = float(learning_rate)
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.decay = decay
        self.final_fraction = float(final_fraction)
        self.warmup_epochs = float(warmup_epochs)
        self.min_warmup_steps = int(min_warmup_steps)
        self.warmup_bias_lr = float(warmup_bias_lr)
        self.warmup_momentum = float(warmup_momentum)
        self.final_momentum = float(momentum)
        self.batch_size = int(batch_size)
        self.nominal_batch_size = int(nominal_batch_size)
        self.restart_epochs = restart_epochs
        self.restart_mult = float(restart_mult)
        self.adjustable = bool(adjustable)
        self.warmup_steps = max(
            _round_half_even(self.warmup_epochs * self.steps_per_epoch),
            self.min_warmup_steps)
        self.nominal_accumulate = max(
            _round_half_even(self.nominal_batch_size / self.batch_size), 1)
        self._epochs = None
        if adjustable:
            import tensorflow as tf

            self._epochs = tf.Variable(float(epochs), trainable=False,
                                       name="schedule_epochs")

    @property
    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    def set_total_steps(self, total_steps):
        """Shortens the run (the time budget of `train`): E becomes
        `total_steps / nb` epochs, so the decay still ends at lrf."""
        if self._epochs is None:
            raise ValueError("set_total_steps needs adjustable=True.")
        self.epochs = max(int(math.ceil(total_steps / self.steps_per_epoch)),
                          1)
        self._epochs.assign(float(self.epochs))

    def _warmup_fraction(self, step):
        """np.interp's position on [0, nw], 1 after warmup."""
        step = ops.cast(step, "float32")
        if self.warmup_steps == 0:
            return ops.ones_like(step)
        return ops.clip(step / self.warmup_steps, 0.0, 1.0)

    def factor(self, step):
        """The decay factor of batch `step`: lf(epoch) during warmup and in
        the epoch where warmup ends, lf(epoch − 1) after (train.py's
        LambdaLR lags one epoch: it sets `last_epoch = -1` after the
        constructor's own step, so its first `step()` gives lf(0))."""
        step = ops.cast(step, "float32")
        epoch = ops.floor(step / self.steps_per_epoch)
        warm_epoch = self.warmup_steps // self.steps_per_epoch
        epoch = ops.where((step <= self.warmup_steps) | (epoch == warm_epoch),
                          epoch, ops.maximum(epoch - 1.0, 0.0))
        epochs = self.epochs if self._epochs is None else self._epochs
        return decay_factor(epoch, epochs, self.decay, self.final_fraction,
                            self.restart_epochs, self.restart_mult)

    def __call__(self, step):
        x = self._warmup_fraction(step)
        return x * self.learning_rate * self.factor(step)

    def bias_learning_rate(self, step):
        x = self._warmup_fraction(step)
        target = self.learning_rate * self.factor(step)
        return self.warmup_bias_lr + x * (target - self.warmup_bias_lr)

    def momentum(self, step):
        x = self._warmup_fraction(step)
        return self.warmup_momentum + x * (self.final_momentum
                                           - self.warmup_momentum)

    def accumulate(self, step):
        x = self._warmup_fraction(step)
        ramp = 1.0 + x * (self.nominal_batch_size / self.batch_size - 1.0)
        return ops.maximum(ops.round(ramp), 1.0)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "epochs": self.epochs,
                "steps_per_epoch": self.steps_per_epoch, "decay": self.decay,
                "final_fraction": self.final_fraction,
                "warmup_epochs": self.warmup_epochs,
                "min_warmup_steps": self.min_warmup_steps,
                "warmup_bias_lr": self.warmup_bias_lr,
                "warmup_momentum": self.warmup_momentum,
                "momentum": self.final_momentum,
                "batch_size": self.batch_size,
                "nominal_batch_size": self.nominal_batch_size,
                "restart_epochs": self.restart_epochs,
                "restart_mult": self.restart_mult}


def _round_half_even(value):
    return int(round(value))  # Python's round is half-to-even, as numpy's
