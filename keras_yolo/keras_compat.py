"""Every use of Keras internals in keras-yolo, in one module.

Keras has no public handle for the few things below; each entry says what it
works around, the Keras versions it was written and tested for
(`KERAS_VERSIONS`), and `tests/test_keras_compat.py` fails when an entry
stops applying (the private name it uses is gone or changed) or stops being
needed (Keras fixed the bug it patches), so that an upgrade is a list of
known places to look at, not a hunt.

| entry                          | Keras internal                                    | used by                        |
|--------------------------------|---------------------------------------------------|--------------------------------|
| `patch_multi_worker_reduce`    | `keras.src.backend.tensorflow.trainer.reduce_per_replica` | `training.trainer` (multi-worker) |
| `build_with_local_batch`       | `Model._maybe_symbolic_build`                     | `training.trainer` (multi-worker) |
| `ema_averages`                 | `Optimizer._model_variables_moving_average`       | `training.trainer.ema_weights`, `training.ema` |
| `deferred_variables`           | `keras.src.backend.common.global_state` "uninitialized_variables" | `models.shapes_only` |
| `run_through_graph`            | `Functional._run_through_graph`                   | `models.flops`                 |
| `OPTIMIZER_HOOKS`              | private `Optimizer` methods a subclass overrides or calls | `training.optimizer.YoloSGD`, `training.ema.RampEMA` |

Example:
    >>> from keras_yolo import keras_compat
    >>> keras_compat.patch_multi_worker_reduce()   # idempotent
"""

import keras

# Versions each entry was written for and tested with (keras.__version__).
KERAS_VERSIONS = {
    "patch_multi_worker_reduce": "3.15",
    "build_with_local_batch": "3.15",
    "ema_averages": "3.15",
    "deferred_variables": "3.15",
    "run_through_graph": "3.15",
    "OPTIMIZER_HOOKS": "3.15",
}
# Private `keras.optimizers.Optimizer` members `training.optimizer.YoloSGD`
# and `training.ema.RampEMA` override or call (the TF backend's optimizer):
# overridden: _backend_update_step, _update_model_variables_moving_average;
# called: _all_reduce_sum_gradients, _get_variable_index; read:
# _distribution_strategy, and after build with use_ema
# _model_variables_moving_average (`ema_averages`).
OPTIMIZER_HOOKS = ("_backend_update_step", "_update_model_variables_moving_average",
                   "_all_reduce_sum_gradients", "_get_variable_index")
_PATCHED = "_keras_yolo_patched"


def patch_multi_worker_reduce():
    """Keras 3.15 reduces every multi-worker log with
    `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars (the loss,
    every metric): reduce scalars with `axis=None` instead. Idempotent;
    process-wide."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, _PATCHED, False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if (reduction in ("auto", "mean") and
                tf_trainer._collective_all_reduce_multi_worker(strategy)):
            def scalar_safe(v):
                local = strategy.experimental_local_results(v)
                if all(getattr(x, "shape", None) is not None
                       and x.shape.rank == 0 for x in local):
                    return strategy.reduce("MEAN", v, axis=None)
                return original(v, strategy, reduction)

            return keras.tree.map_structure(scalar_safe, values)
        return original(values, strategy, reduction)

    setattr(reduce_per_replica, _PATCHED, True)
    reduce_per_replica.original = original
    tf_trainer.reduce_per_replica = reduce_per_replica


def build_with_local_batch(model, batches):
    """Keras 3.15's `fit` under MultiWorkerMirroredStrategy "MEAN"-reduces a
    distributed first batch only to read its shapes, and that reduce fails
    ("Attempt to convert a value (PerReplica ...)"); give it a local batch
    instead (same shapes). Affects this `model` only."""
    local = next(iter(batches))
    build = type(model)._maybe_symbolic_build

    def maybe_symbolic_build(iterator=None, data_batch=None):
        return build(model, data_batch=local)

    model._maybe_symbolic_build = maybe_symbolic_build


def ema_averages(optimizer):
    """The optimizer's moving averages of the trainable variables (Keras'
    `use_ema`), one per variable in order (None where not averaged), or
    None when it keeps none."""
    return getattr(optimizer, "_model_variables_moving_average", None)


def deferred_variables():
    """`(get, set)` of Keras' global list of variables whose initialisation
    is deferred (created inside `StatelessScope(initialize_variables=False)`,
    initialised when the next outermost scope closes)."""
    from keras.src.backend.common import global_state

    key = "uninitialized_variables"
    return (lambda: global_state.get_global_attribute(key),
            lambda value: global_state.set_global_attribute(key, value))


def run_through_graph(model, inputs, call_fn):
    """Runs a functional model's graph on `inputs` calling
    `call_fn(operation, *args, **kwargs)` for each layer (Keras' per-layer
    hook of `Functional`)."""
    return model._run_through_graph(inputs, call_fn=call_fn)
