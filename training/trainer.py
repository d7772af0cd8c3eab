"""`train(...)`: fit a YOLO model under a strategy, with schedule, EMA,
resumable checkpoints, COCO evaluation and a run directory.

The learning rate does not depend on the number of replicas: the dataset's
batch is the global batch, the YOLO losses reduce per image (or per target)
and `YoloModel` divides the loss by the replica count before the gradients
are summed across replicas, i.e. the step equals one device's step on the
whole global batch (tested: same loss trajectory on 1 and 2 replicas).
BatchNormalization layers still see per-replica batches (as in ultralytics'
DDP without SyncBN).
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from keras_yolo import keras_compat
from keras_yolo import metrics as coco_metrics
from keras_yolo.models import YoloModel
from training import callbacks as callbacks_lib
from training import records
from training import resume as resume_lib
from training import run as run_lib
from training import strategy as strategy_lib
from training.ema import RampEMA, averaged_extras
from training.optimizer import CLIP_NORM, YoloSGD, scaled_weight_decay
from training.schedules import WarmupDecay, YoloV5Schedule

_logger = logging.getLogger("training")

OPTIMIZERS = ("sgd", "adamw", "adam")
# ultralytics' SGD momentum and weight decay (hyp.scratch-low.yaml).
SGD_MOMENTUM = 0.937
WEIGHT_DECAY = 5e-4
# Variables without weight decay (ultralytics: biases and BatchNorm).
NO_DECAY = ["bias", "gamma", "beta", "moving_mean", "moving_variance"]
# EMA horizon of "auto": about this fraction of the run's steps.
EMA_HORIZON_FRACTION = 0.05


@dataclasses.dataclass
class TrainResult:
    model: keras.Model
    run_dir: str
    metrics: dict
    history: list


def make_optimizer(name="sgd", learning_rate=0.01, momentum=SGD_MOMENTUM,
                   weight_decay=WEIGHT_DECAY, ema=True, ema_momentum=0.9999,
                   clipnorm=CLIP_NORM, batch_size=64, nominal_batch_size=64):
    """The yolov5 recipe's SGD (`training.optimizer.YoloSGD`: parameter
    groups, coupled L2 on kernels, accumulation to `nominal_batch_size`,
    clipping, ModelEMA ramp) or Keras' AdamW / Adam (decoupled decay off
    biases and BatchNorm, Keras' fixed-momentum EMA, global-norm clip).

    For "sgd", `learning_rate` is a `YoloV5Schedule` (a number: constant
    rate, no warmup) and `ema_momentum` the ramp's final decay."""
    if name not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}; "
                         f"got {name!r}.")
    if name == "sgd":
        schedule = learning_rate
        if not isinstance(schedule, YoloV5Schedule):
            schedule = YoloV5Schedule(
                float(learning_rate), decay="constant", warmup_epochs=0,
                min_warmup_steps=0, momentum=momentum, batch_size=batch_size,
                nominal_batch_size=nominal_batch_size)
        return YoloSGD(schedule, weight_decay=scaled_weight_decay(
            weight_decay, schedule.batch_size, schedule.nominal_batch_size),
            gradient_scale=schedule.batch_size, clip_norm=clipnorm,
            use_ema=bool(ema), ema_decay=float(ema_momentum))
    common = dict(learning_rate=learning_rate, use_ema=bool(ema),
                  ema_momentum=float(ema_momentum), global_clipnorm=clipnorm)
    if name == "adamw":
        opt = keras.optimizers.AdamW(weight_decay=weight_decay, **common)
    else:
        opt = keras.optimizers.Adam(**common)
    if weight_decay:
        opt.exclude_from_weight_decay(var_names=NO_DECAY)
    return opt


def resolve_ema_momentum(ema_momentum, total_steps):
    """`"auto"`: 1 - 1/(EMA_HORIZON_FRACTION * T), clipped to [0.9, 0.9999]:
    the average spans about the last 5% of the run, whatever its length."""
    if ema_momentum != "auto":
        value = float(ema_momentum)
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"`ema_momentum` must be in [0, 1) or 'auto'; got "
                f"{ema_momentum!r}.")
        return value
    horizon = max(EMA_HORIZON_FRACTION * total_steps, 1.0)
    return float(np.clip(1.0 - 1.0 / horizon, 0.9, 0.9999))


@contextlib.contextmanager
def ema_weights(model):
    """Within the block the model holds the optimizer's EMA weights; the raw
    weights come back after (a no-op without `use_ema`)."""
    optimizer = model.optimizer
    averages = keras_compat.ema_averages(optimizer)
    if not getattr(optimizer, "use_ema", False) or not averages:
        yield
        return
    variables = model.trainable_variables
    saved = [v.numpy() for v in variables]
    for v, a in zip(variables, averages):
        if a is not None:
            v.assign(a)
    swap_extras = getattr(optimizer, "swap_extras", lambda: None)
    swap_extras()   # BatchNorm statistics (ModelEMA averages them too)
    try:
        yield
    finally:
        swap_extras()
        for v, value in zip(variables, saved):
            v.assign(value)


class EmaCocoMetricCallback(coco_metrics.CocoMetricCallback):
    """`CocoMetricCallback` evaluating the EMA weights (as ultralytics
    evaluates its EMA model) through a compiled detector."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        model, postprocess = self.model, self.postprocess

        @tf.function(reduce_retracing=True)
        def detect(images):
            outputs = model(images, training=False)
            return postprocess(outputs) if postprocess else outputs

        self._detect = detect

    def detector(self, images):
        return self._detect(images)

    def on_epoch_end(self, epoch, logs=None):
        with ema_weights(self.model):
            super().on_epoch_end(epoch, logs)


def batch_dataset(dataset, batch_size, shuffle=True, seed=0, repeat=False,
                  drop_remainder=True):
    """Unbatched `(image, gt)` -> batches of the global batch size.

    Training keeps `drop_remainder=True` (static shapes for XLA and every
    replica); evaluation passes False so that every image is scored."""
    if len(dataset.element_spec[0].shape) == 4:
        return dataset  # already batched
    options = resume_lib.distribution_options(dataset)
    if shuffle:
        dataset = dataset.shuffle(resume_lib.shuffle_buffer_size(dataset),
                                  seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if repeat:
        dataset = dataset.repeat()
    options.deterministic = not shuffle or seed is not None
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _instantiate(thing, kind):
    if isinstance(thing, (keras.Model, keras.losses.Loss)):
        return thing
    if callable(thing):
        return thing()
    raise ValueError(f"`{kind}` must be a {kind} or a function building "
                     f"one; got {type(thing).__name__}.")


def train(model, loss, train_data, *, val_data=None, epochs=10,
          batch_size=16, optimizer="sgd", learning_rate=0.01,
          momentum=SGD_MOMENTUM, weight_decay=WEIGHT_DECAY,
          schedule=None, warmup_epochs=None, final_fraction=0.01,
          warmup_bias_lr=0.1, warmup_momentum=0.8, min_warmup_steps=100,
          nominal_batch_size=64, clip_norm=CLIP_NORM,
          ema=True, ema_momentum="auto", strategy="auto", jit_compile="auto",
          run_dir=None, postprocess=None,
          bounding_box_format="rel_center_xywh", num_classes=None,
          eval_every=1, eval_batch_size=None, steps_per_epoch=None,
          shuffle=True, seed=0, time_budget=None, backup_every="epoch",
          log_every=0, config=None, overwrite=False, verbose=0,
          extra_callbacks=(), deterministic=False, progress=True,
          self_adversarial=0.0, self_adversarial_probability=0.5):
    """Trains a detector and writes a run directory (see `training.run`).

    Args:
        model: a function building the model (called inside the strategy's
            scope; required with more than one replica) or a built
            `keras.Model` (one device).
        loss: a YOLO loss (or a function building one).
        train_data: unbatched `(image, {"boxes", "labels"})` dataset (or an
            already batched one: its batch is the global batch).
        val_data: the same for validation mAP (needs `postprocess`).
        epochs: epochs to train (a resumed run continues to this count).
        batch_size: global batch size (split over the replicas).
        optimizer: `"sgd"`: ultralytics yolov5 train.py's recipe
            (`training.optimizer.YoloSGD` with `YoloV5Schedule`: per-epoch
            decay, warmup of max(`warmup_epochs`, `min_warmup_steps`)
            batches with the bias lr falling from `warmup_bias_lr` and the
            momentum rising from `warmup_momentum`, accumulation to
            `nominal_batch_size` images, coupled L2 `weight_decay` on
            kernels, global clip `clip_norm`, ModelEMA); `"adamw"`,
            `"adam"`: Keras' with `WarmupDecay` (per step, from zero).
        learning_rate: lr0, the peak learning rate.
        schedule: `"linear"`, `"cosine"`, `"sgdr"` (sgd only) or
            `"constant"` after warmup; None: "linear" for sgd (yolov5's
            default), "cosine" for adam(w).
        warmup_epochs: warmup length in epochs (fractions allowed); None:
            3 for sgd (yolov5), 1 for adam(w).
        final_fraction: last learning rate / peak (ultralytics' `lrf`).
        ema: keep an exponential moving average of the weights (Keras'
            `use_ema`); evaluation and the saved model use it.
        ema_momentum: sgd: ModelEMA's decay (`"auto"`: 0.9999, ramped
            with tau 2000 steps); adam(w): the fixed EMA momentum or
            `"auto"` (see `resolve_ema_momentum`).
        strategy: a name of `training.strategy.STRATEGIES` or a
            `tf.distribute.Strategy`.
        jit_compile: `"auto"` (XLA where it works), True or False.
        run_dir: the run directory; default `runs/train-<time>`. An existing
            unfinished run there is resumed from its last backup, exactly
            (`training.resume`); otherwise the files of an older run there
            are removed first.
        postprocess: raw model outputs -> detections dict (decode + NMS),
            for the mAP evaluation.
        bounding_box_format: format of the ground truth and detections.
        eval_every: evaluate the validation mAP every this many epochs (and
            after the last).
        steps_per_epoch: needed when the dataset's length is unknown.
        time_budget: seconds of training at most: the run stops after the
            last epoch that fits and the schedule is shortened to end there
            (see `training.run.TimeBudget`).
        seed: seeds the weights' initialisation (Keras, TF, numpy, Python)
            and the data order (a function of `(seed, epoch)`); None leaves
            the global seeds alone.
        backup_every: `"epoch"` or a number of steps between resumable
            backups (always also at each epoch's end).
        config: a dict recorded in `config.json` (e.g. the CLI arguments).
        overwrite: start over in a `run_dir` whose run already finished.
        verbose: Keras' `fit` verbosity (progress lines are logged anyway).
        extra_callbacks: more Keras callbacks, run after the built-in ones.
        deterministic: `tf.config.experimental.enable_op_determinism()`
            (bitwise-equal runs at some speed cost; process-wide).
        progress: a progress bar per epoch (`training.records`).
        self_adversarial: Self-Adversarial Training's step size in image
            units (e.g. 2 / 255; 0: off), applied to a batch with
            probability `self_adversarial_probability` (see `YoloModel`).

    Returns:
        `TrainResult(model, run_dir, metrics, history)`; `metrics` is also
        written to `run_dir/metrics.json`.

    Example:
        >>> result = train(lambda: models.build("yolov5n", num_classes=3),
        ...                YoloV5Loss(num_classes=3), data.shapes(512),
        ...                val_data=data.shapes(64, seed=1), epochs=30,
        ...                postprocess=detect_fn, run_dir="runs/shapes")
        >>> result.metrics["map50"]
    """
    _check_arguments(epochs, batch_size, val_data, postprocess)
    run = _open_run(run_dir, overwrite)
    strategy, jit = _set_up_runtime(strategy, jit_compile, batch_size, seed,
                                    deterministic)
    given_steps = steps_per_epoch
    steps_per_epoch = _steps_per_epoch(train_data, batch_size,
                                       steps_per_epoch,
                                       _file_shards(strategy, train_data))
    plan = _plan_schedule(
        optimizer, learning_rate, epochs, steps_per_epoch, schedule,
        warmup_epochs, final_fraction, min_warmup_steps, warmup_bias_lr,
        warmup_momentum, momentum, batch_size, nominal_batch_size,
        ema_momentum, time_budget)
    model, loss = _compile(
        strategy, model, loss, optimizer, plan, momentum, weight_decay, ema,
        clip_norm, batch_size, nominal_batch_size, jit,
        {"self_adversarial": self_adversarial,
         "self_adversarial_probability": self_adversarial_probability})
    state = _make_state(run, model, loss, plan.lr, epochs, steps_per_epoch,
                        backup_every, time_budget)
    train_batches = resume_lib.epoch_batches(
        train_data, batch_size, seed, state.first_epoch, epochs,
        steps_per_epoch=given_steps, shuffle=shuffle)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        keras_compat.build_with_local_batch(model, train_batches)
        keras_compat.patch_multi_worker_reduce()

    settings = {
        "epochs": epochs, "batch_size": batch_size, "optimizer": optimizer,
        "learning_rate": learning_rate, "schedule": plan.schedule,
        "warmup_steps": plan.warmup_steps,
        "total_steps": epochs * steps_per_epoch,
        "steps_per_epoch": steps_per_epoch, "ema": bool(ema),
        "ema_momentum": plan.ema_momentum, "weight_decay": weight_decay,
        "strategy": strategy_lib.describe(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "jit_compile": jit, "bounding_box_format": bounding_box_format,
        "parameters": int(model.count_params()), "seed": seed,
        "self_adversarial": self_adversarial,
    }
    _write_config(run, settings, config)
    val_batches = None if val_data is None else batch_dataset(
        val_data, eval_batch_size or batch_size, shuffle=False,
        drop_remainder=False)
    callbacks, preview = _callbacks(
        run, state, model, val_batches, postprocess, bounding_box_format,
        num_classes, eval_every, epochs, steps_per_epoch, batch_size,
        log_every, progress, extra_callbacks)

    start = time.perf_counter()
    if state.first_epoch < epochs:
        model.fit(train_batches, epochs=epochs,
                  initial_epoch=state.first_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                  verbose=verbose, shuffle=False)
    else:  # killed after the last epoch's backup: only the ending is left
        model.optimizer.finalize_variable_values(model.trainable_variables)
    train_seconds = time.perf_counter() - start
    return _finish(run, model, settings, train_seconds, val_batches,
                   postprocess, preview, bounding_box_format, num_classes,
                   config)


def _check_arguments(epochs, batch_size, val_data, postprocess):
    if epochs < 1:
        raise ValueError(f"`epochs` must be >= 1; got {epochs}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1; got {batch_size}.")
    if val_data is not None and postprocess is None:
        raise ValueError("`val_data` needs `postprocess` (raw outputs -> "
                         "detections) to compute mAP.")


def _set_up_runtime(strategy, jit_compile, batch_size, seed,
                    deterministic):
    """Seeds, op determinism, the strategy (from its name) and whether to
    compile with XLA: `(strategy, jit_compile)`."""
    if seed is not None:  # weights, dropout, numpy, python; data: below
        keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if isinstance(strategy, str):
        strategy = strategy_lib.make_strategy(strategy)
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"`batch_size`={batch_size} must be a multiple of "
                         f"the {replicas} replicas.")
    return strategy, strategy_lib.resolve_jit_compile(jit_compile, strategy)


@dataclasses.dataclass
class _Run:
    """Where a run writes: its directory, backups, and whether it resumes."""
    run_dir: str
    backup_dir: str
    resuming: bool
    chief: bool


def _open_run(run_dir, overwrite):
    """The run directory (per worker off the chief), refusing a finished
    run without `overwrite`; a fresh start clears an older run's files."""
    run_dir = run_lib.make_run_dir(run_dir, prefix="train")
    kind, index, chief = strategy_lib.task()
    if not chief:  # other workers of a multi-worker run keep their own files
        run_dir = run_lib.make_run_dir(os.path.join(run_dir,
                                                    f"{kind}-{index}"))
    previous = run_lib.read_json(os.path.join(run_dir, "metrics.json"), {})
    if previous.get("finished") and not overwrite:
        raise ValueError(
            f"run_dir={run_dir!r} holds a finished run; pass overwrite=True "
            "(--overwrite) or choose another directory.")
    backup_dir = os.path.join(run_dir, "backup")
    resuming = not previous.get("finished") and os.path.exists(
        os.path.join(backup_dir, resume_lib.STATE_FILE))
    if not resuming:  # no file of an older run may outlive the new start
        run_lib.clear_run_outputs(run_dir)
    return _Run(run_dir, backup_dir, resuming, chief)


def _file_shards(strategy, dataset):
    """Workers whose files together make the epoch: a multi-worker run's
    dataset sharded by the loader (`data.load(shard=...)`, auto-shard OFF)
    holds one worker's share; otherwise 1 (every worker sees it all)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    policy = dataset.options().experimental_distribute.auto_shard_policy
    if policy != tf.data.experimental.AutoShardPolicy.OFF:
        return 1
    shard = strategy_lib.worker_shard()
    return shard[0] if shard else 1


def _steps_per_epoch(train_data, batch_size, steps_per_epoch, shards=1):
    """Batches per epoch: given, or the dataset's length (in batches).
    With `shards` workers each holding 1/shards of the files (padded to
    equal counts), the epoch is `shards` times this worker's length: each
    step takes batch/shards from every worker."""
    if steps_per_epoch is not None:
        return steps_per_epoch
    steps_per_epoch = int(train_data.cardinality())
    if steps_per_epoch > 0:
        steps_per_epoch *= shards
    if len(train_data.element_spec[0].shape) != 4:  # unbatched
        steps_per_epoch = (steps_per_epoch // batch_size
                           if steps_per_epoch > 0 else steps_per_epoch)
    if steps_per_epoch <= 0:
        raise ValueError(
            "the training dataset's length is unknown or smaller than "
            f"batch_size={batch_size}; pass `steps_per_epoch`.")
    return steps_per_epoch


@dataclasses.dataclass
class _Schedule:
    lr: object            # the optimizer's learning rate (a schedule)
    schedule: str         # the decay after warmup
    warmup_steps: int
    ema_momentum: float


def _plan_schedule(optimizer, learning_rate, epochs, steps_per_epoch,
                   schedule, warmup_epochs, final_fraction, min_warmup_steps,
                   warmup_bias_lr, warmup_momentum, momentum, batch_size,
                   nominal_batch_size, ema_momentum, time_budget):
    """The learning-rate schedule and EMA decay of `optimizer`: sgd's
    `YoloV5Schedule` (ModelEMA's decay), adam(w)'s `WarmupDecay` (the EMA
    momentum `resolve_ema_momentum` gives)."""
    total_steps = epochs * steps_per_epoch
    if schedule is None:
        schedule = "linear" if optimizer == "sgd" else "cosine"
    if warmup_epochs is None:
        warmup_epochs = 3.0 if optimizer == "sgd" else 1.0
    if optimizer == "sgd":
        lr = YoloV5Schedule(
            learning_rate, epochs, steps_per_epoch, schedule, final_fraction,
            warmup_epochs, min_warmup_steps, warmup_bias_lr, warmup_momentum,
            momentum, batch_size, nominal_batch_size,
            adjustable=bool(time_budget))
        ema_value = 0.9999 if ema_momentum == "auto" else float(ema_momentum)
        return _Schedule(lr, schedule, lr.warmup_steps, ema_value)
    warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)),
                       total_steps - 1)
    lr = WarmupDecay(learning_rate, total_steps, warmup_steps, schedule,
                     final_fraction, adjustable=bool(time_budget))
    return _Schedule(lr, schedule, warmup_steps,
                     resolve_ema_momentum(ema_momentum, total_steps))


def _compile(strategy, model, loss, optimizer, plan, momentum, weight_decay,
             ema, clip_norm, batch_size, nominal_batch_size, jit,
             model_options=None):
    """Builds model and loss under the strategy and compiles them with the
    optimizer, its slots created: `(model, loss)`. `model_options`: more
    `compile` arguments of a `YoloModel` (Self-Adversarial Training)."""
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        if isinstance(model, keras.Model) and replicas > 1:
            raise ValueError(
                f"with {replicas} replicas pass a function that builds the "
                "model, so its variables are created under the strategy.")
        model = _instantiate(model, "model")
        loss = _instantiate(loss, "loss")
        options = {}
        if model_options and model_options.get("self_adversarial"):
            if not isinstance(model, YoloModel):
                raise ValueError("self_adversarial needs a YoloModel; got "
                                 f"{type(model).__name__}.")
            options = model_options
        model.compile(
            optimizer=make_optimizer(optimizer, plan.lr, momentum,
                                     weight_decay, ema, plan.ema_momentum,
                                     clip_norm, batch_size,
                                     nominal_batch_size),
            loss=loss, jit_compile=jit, **options)
        if isinstance(model.optimizer, RampEMA) and ema:
            model.optimizer.average_also(averaged_extras(model))
        # Creating the optimizer's slots before `fit` spares its first
        # step a second trace (tf.function retraces a step that created
        # variables): 143 s -> 34 s for small_v5's first step.
        model.optimizer.build(model.trainable_variables)
    return model, loss


@dataclasses.dataclass
class _State:
    """The callbacks whose state a resumed run restores, and where it
    resumes."""
    best: object
    best_path: str
    budget: object
    backup: object
    first_epoch: int


def _make_state(run, model, loss, lr, epochs, steps_per_epoch, backup_every,
                time_budget):
    """Best checkpoint, time budget and backup; restores them (and the
    model, optimizer and loss) from the last backup when resuming."""
    best_path = os.path.join(run.run_dir, "best.weights.h5")
    best = callbacks_lib.BestCheckpoint(best_path, monitor="val_map50",
                                        weights_context=ema_weights)
    budget = run_lib.TimeBudget(time_budget, epochs, steps_per_epoch,
                                lr) if time_budget else None
    backup = resume_lib.ResumableBackup(
        run.backup_dir, run.run_dir, steps_per_epoch,
        save_every=backup_every, loss=loss,
        stateful=[c for c in (best, budget) if c is not None])
    first_epoch = backup.restore(model) if run.resuming else 0
    return _State(best, best_path, budget, backup, first_epoch)


def _write_config(run, settings, config):
    run_lib.write_json(os.path.join(run.run_dir, "config.json"),
                       {**(config or {}), "train": settings})
    _logger.info("run %s: %s, jit_compile=%s, %d steps/epoch x %d epochs, "
                 "%s params%s", run.run_dir, settings["strategy"],
                 settings["jit_compile"], settings["steps_per_epoch"],
                 settings["epochs"], f"{settings['parameters']:,}",
                 " (resuming)" if run.resuming else "")


def _callbacks(run, state, model, val_batches, postprocess,
               bounding_box_format, num_classes, eval_every, epochs,
               steps_per_epoch, batch_size, log_every, progress,
               extra_callbacks):
    """`(callbacks in their order, preview images or None)`."""
    callbacks = []
    preview = None
    if val_batches is not None:
        callbacks.append(EmaCocoMetricCallback(
            val_batches, bounding_box_format, postprocess=postprocess,
            every_n_epochs=eval_every, num_classes=num_classes))
    # The guard first: a non-finite step stops before any callback saves.
    callbacks.insert(0, callbacks_lib.NonFiniteGuard(state.backup,
                                                     state.best_path))
    callbacks.append(records.LearningRates())
    if val_batches is not None:
        callbacks.append(state.best)
    callbacks.append(run_lib.RunLogger(run.run_dir, epochs, log_every))
    if run.chief:
        callbacks += [records.ResultsWriter(run.run_dir),
                      records.tensorboard(run.run_dir)]
        if val_batches is not None:
            preview = next(iter(val_batches.unbatch().take(8).batch(8)))[0]
            detect_fn = tf.function(
                lambda x: postprocess(model(x, training=False)))
            callbacks.append(records.PredictionImages(
                run.run_dir, preview, detect_fn, bounding_box_format,
                ema_weights))
    if progress:
        callbacks.append(records.ProgressBar(steps_per_epoch, batch_size,
                                             epochs))
    if state.budget is not None:
        callbacks.append(state.budget)
    callbacks.append(state.backup)   # after the epoch's records, before extras
    callbacks.extend(extra_callbacks)
    return callbacks, preview


def _finish(run, model, settings, train_seconds, val_batches, postprocess,
            preview, bounding_box_format, num_classes, config):
    """Final evaluation and records, the saved model, `metrics.json` (the
    finished mark); then the backups go. Returns the `TrainResult`."""
    history = run_lib.read_history(run.run_dir)
    epochs_done = history[-1]["epoch"] if history else 0
    step_seconds = sum(h.get("train_seconds", 0.0) for h in history)
    result = {"finished": True, "epochs_completed": epochs_done,
              "train_seconds": round(train_seconds, 2),
              "images_per_second": round(
                  len(history) * settings["steps_per_epoch"]
                  * settings["batch_size"] / max(step_seconds, 1e-9), 2),
              "final_loss": history[-1].get("loss") if history else None,
              **settings}
    if val_batches is not None:
        _final_evaluation(result, run, model, val_batches, postprocess,
                          preview, bounding_box_format, num_classes, config)
    try:
        run_lib.save_model_atomic(model,
                                  os.path.join(run.run_dir, "model.keras"))
        result["model_path"] = os.path.join(run.run_dir, "model.keras")
    except Exception as error:  # noqa: BLE001 - keep the run's weights
        _logger.warning("saving model.keras failed (%s); saving weights", error)
        model.save_weights(os.path.join(run.run_dir, "final.weights.h5"))
        result["model_path"] = os.path.join(run.run_dir, "final.weights.h5")
    run_lib.write_json(os.path.join(run.run_dir, "metrics.json"), result)
    shutil.rmtree(run.backup_dir, ignore_errors=True)  # after the finished mark
    if "map50" in result:
        _logger.info("finished: mAP@0.5 %.4f, mAP@0.5:0.95 %.4f, %.0f s",
                     result["map50"], result["map"], train_seconds)
    return TrainResult(model, run.run_dir, result, history)


def _final_evaluation(result, run, model, val_batches, postprocess,
                      preview, bounding_box_format, num_classes, config):
    """Adds the COCO mAP (per class, PR curve, confusion matrix) of the
    final weights to `result`; the chief also writes its records and
    prediction images."""
    detect = tf.function(lambda x: postprocess(model(x, training=False)))
    start = time.perf_counter()
    final = coco_metrics.evaluate(detect, val_batches, bounding_box_format,
                                  num_classes, return_per_class=True,
                                  return_pr_curve=True,
                                  return_confusion_matrix=True)
    result["eval_seconds"] = round(time.perf_counter() - start, 2)
    result.update(final)
    if run.chief:
        table = records.write_final_records(
            run.run_dir, result, (config or {}).get("class_names"))
        print(table)
        records.write_png(
            os.path.join(run.run_dir, "val_predictions.png"),
            records.prediction_grid_of(detect, preview, bounding_box_format))
