"""`keras_yolo.keras_compat`: each Keras-internal entry still applies (the
private names exist and behave as used) and is still needed (the Keras bug it
works around is still there). A failure here after a Keras upgrade names the
entry to revisit: remove it if no longer needed, rewrite it if it no longer
applies."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_yolo import keras_compat


def _tf_trainer():
    from keras.src.backend.tensorflow import trainer as tf_trainer

    return tf_trainer


def test_every_entry_names_the_keras_version_it_was_written_for():
    public = {name for name in dir(keras_compat) if not name.startswith("_")
              and (callable(getattr(keras_compat, name)) or name == "OPTIMIZER_HOOKS")
              and name not in ("keras",)}
    assert public == set(keras_compat.KERAS_VERSIONS)
    major_minor = ".".join(keras.__version__.split(".")[:2])
    assert major_minor in set(keras_compat.KERAS_VERSIONS.values()), (
        f"Keras {keras.__version__} is not a version keras_compat was checked against: run this "
        "file, then add the version to KERAS_VERSIONS")


def test_multi_worker_reduce_is_still_needed():
    # Keras still reduces multi-worker "mean" logs with axis=0, which a scalar cannot take.
    tf_trainer = _tf_trainer()
    original = getattr(tf_trainer.reduce_per_replica, "original", tf_trainer.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in inspect.getsource(original), (
        "Keras changed its multi-worker mean reduce: patch_multi_worker_reduce may be unneeded")


class _FakeMultiWorker:
    """Records `reduce` calls; `experimental_local_results` of a value is itself."""

    def __init__(self):
        self.calls = []

    def experimental_local_results(self, value):
        return (value,)

    def reduce(self, op, value, axis):
        self.calls.append((op, tuple(value.shape), axis))
        return value


def test_multi_worker_reduce_patch_applies(monkeypatch):
    tf_trainer = _tf_trainer()
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", tf_trainer.reduce_per_replica)
    monkeypatch.setattr(tf_trainer, "_collective_all_reduce_multi_worker", lambda strategy: True)
    keras_compat.patch_multi_worker_reduce()
    patched = tf_trainer.reduce_per_replica
    assert patched.original is not patched
    keras_compat.patch_multi_worker_reduce()   # idempotent
    assert tf_trainer.reduce_per_replica is patched
    strategy = _FakeMultiWorker()
    logs = {"loss": tf.constant(1.5), "per_image": tf.constant([1.0, 2.0])}
    out = patched(logs, strategy, "auto")
    assert ("MEAN", (), None) in strategy.calls          # scalars: axis=None
    assert ("MEAN", (2,), 0) in strategy.calls           # the rest: Keras' own reduce
    assert float(out["loss"]) == 1.5
    # The trainer calls the module-level name, so replacing it reaches `fit`.
    assert "reduce_per_replica(" in inspect.getsource(tf_trainer.TensorFlowTrainer._make_function)


def test_local_batch_build_is_still_needed_and_applies():
    source = inspect.getsource(keras.Model._maybe_symbolic_build)
    assert "distribute_strategy.reduce(" in source, (
        "Keras no longer reduces the first distributed batch: build_with_local_batch may be unneeded")
    assert list(inspect.signature(keras.Model._maybe_symbolic_build).parameters) == [
        "self", "iterator", "data_batch"]
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    seen = []
    original = type(model)._maybe_symbolic_build
    try:
        type(model)._maybe_symbolic_build = lambda self, iterator=None, data_batch=None: seen.append(
            data_batch)
        batch = (np.ones((4, 2), "float32"), np.zeros((4, 1), "float32"))
        keras_compat.build_with_local_batch(model, [batch])
        model._maybe_symbolic_build(iterator=object())
    finally:
        type(model)._maybe_symbolic_build = original
    assert seen[0] is batch


def test_ema_averages_are_keras_moving_averages():
    variables = [keras.Variable(np.ones(3, "float32")), keras.Variable(np.zeros(2, "float32"))]
    optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)
    optimizer.build(variables)
    averages = keras_compat.ema_averages(optimizer)
    assert [tuple(a.shape) for a in averages] == [(3,), (2,)]
    optimizer.apply_gradients(zip([np.ones(3, "float32"), np.ones(2, "float32")], variables))
    # Keras' first EMA step copies the variables (iterations == 0).
    np.testing.assert_allclose(averages[0].numpy(), variables[0].numpy())
    assert keras_compat.ema_averages(keras.optimizers.SGD(0.1)) is None


def test_deferred_variables_is_the_list_keras_initialises():
    get, set_ = keras_compat.deferred_variables()
    before = list(get() or [])
    with keras.StatelessScope(initialize_variables=False):
        variable = keras.Variable(keras.initializers.Zeros(), shape=(2,))
        assert any(v is variable for v in get())
    set_(before)


def test_run_through_graph_calls_back_per_layer():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="b")(hidden))
    names = []

    def trace(operation, *args, **kwargs):
        names.append(operation.name)
        return operation.compute_output_spec(*args, **kwargs)

    out = keras_compat.run_through_graph(model, [keras.KerasTensor((1, 4))], trace)
    assert names == ["a", "b"] and tuple(out.shape) == (1, 2)


@pytest.mark.parametrize("name", keras_compat.OPTIMIZER_HOOKS)
def test_optimizer_hooks_exist(name):
    optimizer = keras.optimizers.SGD(0.1)
    assert callable(getattr(optimizer, name, None)), f"keras Optimizer has no {name} any more"
    optimizer.build([keras.Variable(np.ones(2, "float32"))])
    assert optimizer._distribution_strategy is not None
