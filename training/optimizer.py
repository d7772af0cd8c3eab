"""ultralytics yolov5's optimizer step as one Keras optimizer.

`YoloSGD` reproduces what yolov5 7.0.14 `train.py` does between two
`optimizer.zero_grad()` calls, with `torch.optim.SGD(nesterov=True)`:

1. Gradients are summed over `accumulate` batches (`loss.backward()` adds
   up); ComputeLoss returns the mean loss times the batch size, the
   keras-yolo losses return the mean, so each batch's gradient is
   multiplied by `batch_size` first.
2. Once `ni − last_step >= accumulate` (`YoloV5Schedule.accumulate`, which
   ramps from 1 to `nbs / batch` during warmup), the summed gradient `g` is
   clipped to global norm 10 (`clip_grad_norm_`: `g · min(1, 10 / (‖g‖ +
   1e-6))`), then torch's SGD step runs with the group's lr and momentum:

       g <- g + wd · w                 (coupled L2, conv kernels only)
       b <- μ b + g                    (b = g on the first step)
       w <- w − lr (g + μ b)           (Nesterov)

3. The EMA (`training.ema.RampEMA`) advances once per step.

Three parameter groups as yolov5's `smart_optimizer`: biases (the BatchNorm
`beta` too; lr warms down from `warmup_bias_lr`), BatchNorm `gamma` (no
decay), and every other weight (kernels, decay `wd`).

Keras' `weight_decay` is decoupled (`w <- w − lr · wd · w` beside the
step, outside the momentum); coupled L2 goes through the momentum, so with
μ = 0.937 its shrink per step settles at `lr · wd / (1 − μ)`, 15.9 times
Keras' (tested). Over 100 epochs x 100 steps of yolov5's linear schedule a
kernel with no data gradient keeps 0.66 of its norm coupled, 0.97
decoupled. Keras' decoupled decay would need `wd · 16` to match, and
differs from the reference during warmup (momentum 0.8 -> 0.937), so the
recipe keeps torch's coupled L2.
"""

import keras
import tensorflow as tf
from keras import ops

from training.ema import EMA_DECAY, EMA_TAU, RampEMA
from training.schedules import YoloV5Schedule

GROUPS = ("bias", "no_decay", "decay")
# Variable names of each group (Keras layer weights).
BIAS_NAMES = ("bias", "beta")
NO_DECAY_NAMES = ("gamma",)
CLIP_NORM = 10.0
# torch.nn.utils.clip_grad_norm_'s epsilon.
CLIP_EPS = 1e-6


def param_group(variable):
    """yolov5 `smart_optimizer`'s group of a Keras variable: "bias"
    (biases and BatchNorm beta), "no_decay" (BatchNorm gamma) or "decay"."""
    name = variable.name.split("/")[-1].split(":")[0]
    if name in BIAS_NAMES:
        return "bias"
    if name in NO_DECAY_NAMES:
        return "no_decay"
    return "decay"


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloSGD(RampEMA, keras.optimizers.Optimizer):
    """SGD with yolov5's groups, coupled L2, accumulation, clipping and EMA.

    Args:
        schedule: a `training.schedules.YoloV5Schedule` (or its config):
            lr of each group, momentum and accumulate at each batch.
        weight_decay: the L2 factor of the "decay" group, already scaled
            as train.py does (`5e-4 · batch · accumulate / 64`; see
            `scaled_weight_decay`).
        gradient_scale: each batch's gradient is multiplied by this (the
            batch size: mean loss -> ComputeLoss' `mean · B`).
        clip_norm: global gradient norm limit (None: no clipping).
        nesterov: Nesterov momentum (yolov5: True).
        use_ema, ema_decay, ema_tau: ModelEMA (see `training.ema`).

    Example:
        >>> schedule = YoloV5Schedule(0.01, epochs=100, steps_per_epoch=50,
        ...                           batch_size=16)
        >>> optimizer = YoloSGD(schedule, gradient_scale=16,
        ...                     weight_decay=scaled_weight_decay(5e-4, 16))
        >>> model.compile(optimizer=optimizer, loss=YoloV5Loss(...))
    """

    def __init__(self, schedule, weight_decay=5e-4, gradient_scale=1.0,
                 clip_norm=CLIP_NORM, nesterov=True, use_ema=True,
                 ema_decay=EMA_DECAY, ema_tau=EMA_TAU, name="yolo_sgd",
                 **kwargs):
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        if not isinstance(schedule, YoloV5Schedule):
            raise ValueError("`schedule` must be a YoloV5Schedule; got "
                             f"{type(schedule).__name__}.")
        for key in ("learning_rate", "weight_decay", "ema_momentum"):
            kwargs.pop(key, None)
        super().__init__(learning_rate=schedule, use_ema=use_ema,
                         ema_momentum=ema_decay, name=name, **kwargs)
        self.schedule = schedule
        self.l2 = float(weight_decay)
        self.gradient_scale = float(gradient_scale)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.nesterov = bool(nesterov)
        self.ema_decay_max = float(ema_decay)
        self.ema_tau = float(ema_tau)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self.accumulators = self.add_optimizer_variables(variables,
                                                         "accumulator")
        # train.py's last_opt_step.
        self.last_step = self.add_variable(
            shape=(), dtype="int64", initializer="zeros", name="last_step",
            aggregation="only_first_replica")
        self.last_step.assign(-1)
        self.groups = [param_group(v) for v in variables]
        if self.use_ema:
            self._build_ema(variables)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Keras (TF backend) calls this in replica context with the
        # replica's gradients: reduce first, so the clipping sees the global
        # batch's gradient, then update every variable the same on each
        # device (as Keras' own update step does).
        variables = [v.value if isinstance(v, keras.Variable) else v
                     for v in trainable_variables]
        pairs = self._all_reduce_sum_gradients(list(zip(grads, variables)))
        step = ops.cast(self.iterations, "int64")
        schedule = self.schedule
        accumulate = ops.cast(schedule.accumulate(step), "int64")
        stepped = step - self.last_step >= accumulate
        totals = []
        for grad, var in pairs:
            acc = self.accumulators[self._get_variable_index(var)]
            totals.append(acc + ops.cast(grad, acc.dtype)
                          * self.gradient_scale)
        coefficient = ops.ones((), "float32")
        if self.clip_norm is not None:
            norm = ops.sqrt(sum(ops.sum(ops.square(t)) for t in totals))
            coefficient = ops.minimum(
                self.clip_norm / (norm + CLIP_EPS), 1.0)
        rates = {"bias": schedule.bias_learning_rate(step),
                 "no_decay": schedule(step), "decay": schedule(step)}
        momentum = schedule.momentum(step)
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_step, self._distribution_strategy,
            [p[1] for p in pairs], totals, stepped, coefficient,
            rates["bias"], rates["decay"], momentum)
        self.last_step.assign(ops.where(stepped, step, self.last_step))
        self._ema_gate = stepped

    def _distributed_step(self, distribution, variables, totals, stepped,
                          coefficient, bias_lr, lr, momentum):
        for var, total in zip(variables, totals):
            distribution.extended.update(
                var, self._update_variable,
                args=(total, stepped, coefficient, bias_lr, lr, momentum),
                group=False)

    def _update_variable(self, variable, total, stepped, coefficient,
                         bias_lr, lr, momentum):
        index = self._get_variable_index(variable)
        group = self.groups[index]
        dtype = variable.dtype
        acc, buf = self.accumulators[index], self.momentums[index]
        g = ops.cast(total, dtype) * ops.cast(coefficient, dtype)
        if group == "decay" and self.l2:
            g = g + self.l2 * variable
        mu = ops.cast(momentum, dtype)
        new_buf = mu * buf + g
        update = g + mu * new_buf if self.nesterov else new_buf
        rate = ops.cast(bias_lr if group == "bias" else lr, dtype)
        self.assign(buf, ops.where(stepped, new_buf, buf))
        self.assign(variable, ops.where(stepped, variable - rate * update,
                                        variable))
        self.assign(acc, ops.where(stepped, ops.zeros_like(total), total))

    def update_step(self, gradient, variable, learning_rate):
        raise NotImplementedError("YoloSGD updates in _backend_update_step")

    def get_config(self):
        config = super().get_config()
        for key in ("learning_rate", "weight_decay", "ema_momentum",
                    "use_ema"):
            config.pop(key, None)
        config.update({
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "weight_decay": self.l2, "gradient_scale": self.gradient_scale,
            "clip_norm": self.clip_norm, "nesterov": self.nesterov,
            "use_ema": self.use_ema, "ema_decay": self.ema_decay_max,
            "ema_tau": self.ema_tau})
        return config


def scaled_weight_decay(weight_decay, batch_size, nominal_batch_size=64):
    """train.py: `wd · batch · accumulate / nbs`, with
    `accumulate = max(round(nbs / batch), 1)`."""
    accumulate = max(int(round(nominal_batch_size / batch_size)), 1)
    return weight_decay * batch_size * accumulate / nominal_batch_size


def make_recipe_optimizer(epochs, steps_per_epoch, batch_size,
                          learning_rate=0.01, final_fraction=0.01,
                          decay="linear", momentum=0.937, weight_decay=5e-4,
                          warmup_epochs=3.0, min_warmup_steps=100,
                          warmup_bias_lr=0.1, warmup_momentum=0.8,
                          nominal_batch_size=64, clip_norm=CLIP_NORM,
                          ema=True, ema_decay=EMA_DECAY, ema_tau=EMA_TAU,
                          adjustable=False, **schedule_kwargs):
    """yolov5 train.py's optimizer (hyp.scratch-low) for a run of `epochs`
    x `steps_per_epoch` batches of `batch_size` images."""
    schedule = YoloV5Schedule(
        learning_rate, epochs, steps_per_epoch, decay, final_fraction,
        warmup_epochs, min_warmup_steps, warmup_bias_lr, warmup_momentum,
        momentum, batch_size, nominal_batch_size, adjustable=adjustable,
        **schedule_kwargs)
    return YoloSGD(schedule,
                   weight_decay=scaled_weight_decay(weight_decay, batch_size,
                                                    nominal_batch_size),
                   gradient_scale=batch_size, clip_norm=clip_norm,
                   use_ema=ema, ema_decay=ema_decay, ema_tau=ema_tau)
