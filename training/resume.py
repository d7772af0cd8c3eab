"""Exact resume: a step-exact training state, written atomically.

A run killed at any point (SIGKILL included) and started again with the same
command continues from its last backup and reaches the same weights,
optimizer slots (momentum, EMA), learning-rate schedule position, loss-state
variables and history as a run that was never interrupted. Three things make
that so:

1. The data order is a pure function of `(seed, epoch)` (`epoch_batches`):
   epoch `e` is the dataset shuffled with the seed pair `(seed, e)`, not
   "the e-th reshuffle of this process' iterator", so a new process can
   start at any epoch.
2. The backup (`backup/state.npz`) holds every variable that training
   changes (model, optimizer incl. its EMA slots and iteration count,
   running epoch metrics, the loss' state variables), the epoch and the
   step within it, the history so far and the state of stateful callbacks
   (best mAP, time budget). It is written to a temporary file and renamed
   over the old one (`os.replace`), so a kill during a write leaves the
   previous backup intact.
3. On resume the batches of the interrupted epoch already trained are drawn
   from the data (keeping its position) but not trained on
   (`ResumableBackup.restore`), so the epoch ends after exactly the steps
   the uninterrupted run takes. Keras' `BackupAndRestore` instead restarts
   the epoch, and the resumed run takes extra steps.

Example:
    >>> backup = ResumableBackup("runs/a/backup", "runs/a", steps_per_epoch,
    ...                          save_every=100, loss=loss)
    >>> first_epoch = backup.restore(model)   # 0 without a backup
    >>> batches = epoch_batches(train_ds, 16, seed=0,
    ...                         first_epoch=first_epoch, epochs=30)
    >>> model.fit(batches, epochs=30, initial_epoch=first_epoch,
    ...           steps_per_epoch=steps_per_epoch, callbacks=[backup])
"""

import json
import logging
import os

import keras
import numpy as np
import tensorflow as tf

_logger = logging.getLogger("training")

STATE_FILE = "state.npz"
# Most bytes of decoded samples a training shuffle buffer may hold.
SHUFFLE_BUFFER_BYTES = 1 << 30
# Mixes the run's seed and the epoch into one shuffle seed.
_SEED_STRIDE = 1_000_003


def epoch_batches(dataset, batch_size, seed, first_epoch, epochs,
                  steps_per_epoch=None, shuffle=True):
    """Batches of epochs `first_epoch .. epochs - 1`, epoch `e` being
    `dataset` shuffled with `(seed, e)`: the same batches in every process.

    Args:
        dataset: unbatched `(image, gt)` (or already batched: not shuffled).
        batch_size: global batch size (the remainder of an epoch is
            dropped, as XLA and the replicas need static shapes).
        seed: the run's seed.
        first_epoch, epochs: the epochs to yield, `[first_epoch, epochs)`.
        steps_per_epoch: batches per epoch when the dataset's length is
            unknown or infinite (each epoch then takes that many from its
            own shuffle of the start of the stream).
        shuffle: shuffle each epoch (`shuffle_buffer_size`: the whole
            dataset when it fits in `SHUFFLE_BUFFER_BYTES`).

    Returns:
        a `tf.data.Dataset` of `(epochs - first_epoch) * steps` batches.
    """
    batched = len(dataset.element_spec[0].shape) == 4
    buffer = shuffle_buffer_size(dataset)
    seed = int(seed or 0)

    def one_epoch(epoch):
        if batched:
            ds = dataset
        else:
            ds = dataset
            if shuffle:
                # The function's own graph seed, so the order depends on
                # (seed, epoch) only, not on the process' global seed (a
                # global seed of 0 also breaks tensor-valued shuffle seeds).
                tf.compat.v1.set_random_seed(1)
                ds = ds.shuffle(buffer, seed=seed * _SEED_STRIDE + epoch,
                                reshuffle_each_iteration=False)
            ds = ds.batch(batch_size, drop_remainder=True)
        if steps_per_epoch is not None:
            ds = ds.repeat().take(steps_per_epoch)
        return ds

    first_epoch = min(int(first_epoch), int(epochs))
    out = tf.data.Dataset.range(first_epoch, int(epochs)).flat_map(one_epoch)
    if first_epoch > 0:
        # A pipeline that reshuffles or rerandomizes "each iteration" keeps
        # its seed generator in the dataset object, advanced by each new
        # iterator: start one iterator (one element, dropped) per epoch
        # already done, so epoch e sees the generator state it had in the
        # uninterrupted run. Stateless per-iteration seeds need this only.
        def started(epoch):
            ds = dataset.take(1).filter(lambda *_: False)
            return ds if batched else ds.batch(batch_size,
                                               drop_remainder=True)

        out = tf.data.Dataset.range(first_epoch).flat_map(
            started).concatenate(out)
    return out.with_options(distribution_options(dataset)).prefetch(
        tf.data.AUTOTUNE)


def shuffle_buffer_size(dataset):
    """Elements a shuffle buffer may hold: the whole dataset, unless its
    decoded samples would take more than `SHUFFLE_BUFFER_BYTES` (a folder of
    photos streamed by `keras_yolo.data.load` is shuffled by file there)."""
    cardinality = int(dataset.cardinality())
    length = cardinality if cardinality > 0 else 1024
    sample_bytes = 0
    for spec in tf.nest.flatten(dataset.element_spec):
        if not spec.shape.is_fully_defined():
            return min(length, 1024)
        sample_bytes += spec.shape.num_elements() * spec.dtype.size
    return int(max(1, min(length, SHUFFLE_BUFFER_BYTES // max(sample_bytes, 1))))


def distribution_options(dataset):
    """Deterministic order; auto-shard by DATA unless the dataset already
    chose a policy (e.g. `keras_yolo.data.load(shard=...)` shards by file and
    sets OFF: overriding it would make every worker decode every image)."""
    options = tf.data.Options()
    chosen = dataset.options().experimental_distribute.auto_shard_policy
    if chosen == tf.data.experimental.AutoShardPolicy.AUTO:
        chosen = tf.data.experimental.AutoShardPolicy.DATA
    options.experimental_distribute.auto_shard_policy = chosen
    options.deterministic = True
    return options


def atomic_write(path, write):
    """Calls `write(file)` on a temporary file beside `path`, flushes it to
    disk and renames it over `path`: readers see the old or the new file,
    never a partial one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_state(path, arrays, meta):
    """Writes `{name: array}` and the JSON-able `meta` to one `.npz`,
    atomically."""
    payload = {name: np.asarray(a) for name, a in arrays.items()}
    payload["__meta__"] = np.frombuffer(
        json.dumps(meta).encode("utf-8"), np.uint8)
    atomic_write(path, lambda f: np.savez(f, **payload))


def load_state(path):
    """`(arrays, meta)` of `save_state`, or None when there is no state."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
            meta = json.loads(bytes(data["__meta__"]).decode("utf-8"))
    except Exception as error:  # noqa: BLE001 - name the file
        raise ValueError(
            f"the training backup {path} cannot be read ({error}); delete "
            "it to start over.") from error
    return arrays, meta


def loss_variables(loss):
    """The `keras.Variable`s a loss keeps as state (v2's images seen, v5's
    autobalance), sorted by attribute name."""
    found = []
    for name in sorted(vars(loss) if loss is not None else ()):
        value = getattr(loss, name)
        if isinstance(value, (keras.Variable, tf.Variable)):
            found.append(value)
    return found


def _groups(model, loss):
    return {"model": model.variables,
            "optimizer": model.optimizer.variables,
            "loss": loss_variables(loss)}


class ResumableBackup(keras.callbacks.Callback):
    """Saves the step-exact training state every `save_every` steps and at
    the end of every epoch (see the module docstring); `restore` loads it.

    Args:
        backup_dir: where `state.npz` lives.
        run_dir: the run directory (its `history.jsonl` is saved with the
            state and rewritten on resume).
        steps_per_epoch: batches per epoch.
        save_every: `"epoch"` or a number of steps.
        loss: the loss object (its state variables are saved too).
        stateful: callbacks with `get_resume_state()` and
            `set_resume_state(state)` (best mAP, time budget), saved by
            class name.
    """

    def __init__(self, backup_dir, run_dir, steps_per_epoch,
                 save_every="epoch", loss=None, stateful=()):
        super().__init__()
        if save_every != "epoch" and int(save_every) < 1:
            raise ValueError(f"`save_every` must be 'epoch' or a step count "
                             f">= 1; got {save_every!r}.")
        self.backup_dir = backup_dir
        self.path = os.path.join(backup_dir, STATE_FILE)
        self.run_dir = run_dir
        self.steps_per_epoch = int(steps_per_epoch)
        self.save_every = None if save_every == "epoch" else int(save_every)
        self.loss = loss
        self.stateful = list(stateful)
        self._metrics = None        # running epoch metrics to restore
        self._resume_epoch = None
        self._saved_step = None
        self.last_saved = None      # (epoch, step) of the last backup

    @property
    def exists(self):
        return os.path.exists(self.path)

    # -- restore ---------------------------------------------------------
    def restore(self, model):
        """Loads the backup into `model` (built and compiled, optimizer
        built) and returns the epoch to start `fit` at (0 without one).
        Call before `fit`: it installs the skipping of the interrupted
        epoch's trained batches into `model.train_function`."""
        state = load_state(self.path)
        if state is None:
            return 0
        arrays, meta = state
        if meta["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(
                f"the backup in {self.backup_dir} was taken with "
                f"steps_per_epoch={meta['steps_per_epoch']}, this run has "
                f"{self.steps_per_epoch}: same data and batch size needed "
                "to resume (or delete the backup).")
        for group, variables in _groups(model, self.loss).items():
            count = meta["counts"][group]
            if count != len(variables):
                raise ValueError(
                    f"the backup in {self.backup_dir} holds {count} {group} "
                    f"variables, this run has {len(variables)}: was the "
                    "model or optimizer changed? (delete the backup to "
                    "start over)")
            for i, variable in enumerate(variables):
                value = arrays[f"{group}/{i}"]
                if tuple(value.shape) != tuple(variable.shape):
                    raise ValueError(
                        f"backup {group} variable {i} ({variable.path}) has "
                        f"shape {value.shape}, the model {variable.shape}.")
                variable.assign(value)
        self._metrics = [arrays[f"metrics/{i}"]
                         for i in range(meta["counts"]["metrics"])]
        states = meta.get("callbacks", {})
        for callback in self.stateful:
            name = type(callback).__name__
            if name in states:
                callback.set_resume_state(states[name])
        from training import run as run_lib

        run_lib.write_history(self.run_dir, meta["history"])
        epoch, step = int(meta["epoch"]), int(meta["step"])
        self._resume_epoch = epoch if step else None
        self._saved_step = int(meta["iterations"])
        self.last_saved = (epoch, step)
        if step:
            _skip_trained_batches(model, step)
        _logger.info("resuming from %s: epoch %d, step %d of %d", self.path,
                     epoch + 1, step, self.steps_per_epoch)
        return epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if epoch == self._resume_epoch and self._metrics is not None:
            # fit has just reset the running means: give back the
            # interrupted epoch's, so the epoch's logs match.
            variables = self.model.metrics_variables
            if len(variables) == len(self._metrics):
                for variable, value in zip(variables, self._metrics):
                    variable.assign(value)
            self._resume_epoch = None

    # -- save ------------------------------------------------------------
    def on_train_batch_end(self, batch, logs=None):
        if self.save_every is None:
            return
        step = int(self.model.optimizer.iterations.numpy())
        if (batch + 1) % self.steps_per_epoch == 0:
            return  # the epoch's end saves after the epoch's callbacks
        if step % self.save_every == 0 and step != self._saved_step:
            self.save(self._epoch, batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1, 0)

    def save(self, epoch, step):
        """Writes the state "`step` batches into epoch `epoch`"."""
        from training import run as run_lib

        arrays, counts = {}, {}
        groups = _groups(self.model, self.loss)
        groups["metrics"] = self.model.metrics_variables
        for group, variables in groups.items():
            counts[group] = len(variables)
            for i, variable in enumerate(variables):
                arrays[f"{group}/{i}"] = keras.ops.convert_to_numpy(variable)
        bad = [name for name, a in arrays.items()
               if a.dtype.kind == "f" and not np.isfinite(a).all()]
        if bad:
            _logger.warning("not saving a backup at epoch %d step %d: "
                            "non-finite values in %s", epoch + 1, step,
                            ", ".join(bad[:5]))
            return False
        iterations = int(self.model.optimizer.iterations.numpy())
        meta = {"epoch": int(epoch), "step": int(step),
                "iterations": iterations,
                "steps_per_epoch": self.steps_per_epoch, "counts": counts,
                "history": run_lib.read_history(self.run_dir),
                "callbacks": {type(c).__name__: c.get_resume_state()
                              for c in self.stateful}}
        os.makedirs(self.backup_dir, exist_ok=True)
        save_state(self.path, arrays, meta)
        self._saved_step = iterations
        self.last_saved = (int(epoch), int(step))
        return True


def _skip_trained_batches(model, count):
    """Wraps `model.train_function` so that its next `count` calls consume
    their batch without training (the batches the interrupted run already
    trained on); fit's callbacks see the restored running metrics."""
    model.make_train_function()
    step = model.train_function
    remaining = [int(count)]

    def train_function(data):
        if remaining[0] > 0:
            remaining[0] -= 1
            # The TF backend passes the iterator (the step pulls its batch),
            # the other backends the batch itself.
            if not isinstance(data, (list, tuple, dict)):
                for _ in range(model.steps_per_execution):
                    next(data)
            return model.get_metrics_result()
        return step(data)

    model.train_function = train_function
