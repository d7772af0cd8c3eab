"""ultralytics' ModelEMA: an exponential moving average of the weights whose
decay ramps up over the first optimizer steps.

    d(u)  = decay · (1 − exp(−u / tau))          (decay 0.9999, tau 2000)
    ema  <- d(u) · ema + (1 − d(u)) · w          after optimizer step u = 1, 2, ...

applied, as yolov5's `utils/torch_utils.py:ModelEMA`, to every floating
weight of the model: the trainable ones and the BatchNorm moving statistics,
starting from the initial weights. Early in a run `d` is small, so the
average follows the fast-changing weights; later it averages about the last
`1 / (1 − 0.9999) = 10,000` steps. `u` counts optimizer steps, not batches
(with gradient accumulation one step spans several batches).

`RampEMA` puts this into a Keras optimizer's own EMA slots (`use_ema=True`),
so Keras' checkpoints, `finalize_variable_values` (the EMA ends up in the
model after `fit`) and `training.ema_weights` keep working.
"""

import math

import keras
from keras import ops

EMA_DECAY = 0.9999
EMA_TAU = 2000.0


def ema_decay(updates, decay=EMA_DECAY, tau=EMA_TAU):
    """`decay · (1 − exp(−updates / tau))` (numbers or tensors)."""
    if isinstance(updates, (int, float)):
        return decay * (1.0 - math.exp(-updates / tau))
    return decay * (1.0 - ops.exp(-ops.cast(updates, "float32") / tau))


# The non-trainable variables ModelEMA averages too (torch BatchNorm's
# running_mean / running_var buffers).
AVERAGED_BUFFERS = ("moving_mean", "moving_variance")


def averaged_extras(model):
    """The model's BatchNorm moving means and variances."""
    return [v for v in model.non_trainable_variables
            if v.name.split("/")[-1].split(":")[0] in AVERAGED_BUFFERS]


class RampEMA:
    """Mixin for a `keras.optimizers.Optimizer` built with `use_ema=True`:
    replaces Keras' fixed-momentum average by ModelEMA's ramp.

    The subclass sets `self.ema_decay_max` and `self.ema_tau`, may set
    `self._ema_gate` (a boolean tensor: "this call stepped", for gradient
    accumulation) before Keras calls `_update_model_variables_moving_average`,
    and calls `average_also(variables)` before `build` for the BatchNorm
    statistics.

    Example:
        >>> class AdamWRampEMA(RampEMA, keras.optimizers.AdamW): ...
    """

    ema_decay_max = EMA_DECAY
    ema_tau = EMA_TAU

    def average_also(self, variables):
        """Also average these (non-trainable) variables; before `build`."""
        if self.built:
            raise ValueError("average_also must be called before build.")
        self._ema_extra = list(variables)

    def _build_ema(self, variables):
        self._ema_extra = list(getattr(self, "_ema_extra", []))
        self.ema_updates = self.add_variable(
            shape=(), dtype="int64", initializer="zeros",
            name="ema_updates", aggregation="only_first_replica")
        self._extra_averages = self.add_optimizer_variables(
            self._ema_extra, "extra_average") if self._ema_extra else []
        # ModelEMA starts from a copy of the model, not from zeros.
        for average, variable in zip(
                list(self._model_variables_moving_average)
                + list(self._extra_averages),
                list(variables) + self._ema_extra):
            if average is not None:
                average.assign(variable)

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        gate = getattr(self, "_ema_gate", None)
        step = ops.ones((), "int64") if gate is None else ops.cast(gate,
                                                                   "int64")
        updates = self.ema_updates + step
        self.ema_updates.assign(updates)
        d = ema_decay(updates, self.ema_decay_max, self.ema_tau)
        # Not stepped: keep the average (weight 1 on it).
        d = ops.where(ops.cast(step, "bool"), d, 1.0)
        pairs = list(zip(trainable_variables,
                         self._model_variables_moving_average))
        pairs += list(zip(self._ema_extra, self._extra_averages))
        for var, average in pairs:
            if average is not None:
                dv = ops.cast(d, var.dtype)
                average.assign(dv * average + (1.0 - dv) * var)

    def swap_extras(self):
        """Swaps the extra variables and their averages (call twice to
        undo): `training.ema_weights` uses it for the BatchNorm stats."""
        for var, average in zip(self._ema_extra, self._extra_averages):
            value = ops.convert_to_tensor(var)
            var.assign(average)
            average.assign(value)

    def finalize_variable_values(self, var_list):
        super().finalize_variable_values(var_list)
        if self.use_ema:
            for var, average in zip(self._ema_extra, self._extra_averages):
                var.assign(average)


@keras.saving.register_keras_serializable(package="keras_yolo")
class AdamWRampEMA(RampEMA, keras.optimizers.AdamW):
    """Keras AdamW whose `use_ema` average follows ModelEMA's ramp (one
    update a step)."""

    def __init__(self, *args, ema_tau=EMA_TAU, **kwargs):
        super().__init__(*args, **kwargs)
        self.ema_decay_max = float(self.ema_momentum)
        self.ema_tau = float(ema_tau)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if self.use_ema:
            self._build_ema(variables)

    def get_config(self):
        return {**super().get_config(), "ema_tau": self.ema_tau}
