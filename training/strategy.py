"""Choosing a `tf.distribute` strategy and whether XLA can compile the step.

| name             | strategy                                                  |
|------------------|-----------------------------------------------------------|
| `"auto"`         | multi-worker if `TF_CONFIG` names >1 worker, mirrored on all GPUs if >1, else the default |
| `"default"`      | TF's default strategy (one device, no wrapping)          |
| `"mirrored"`     | `MirroredStrategy` over all GPUs (or all logical CPUs when there is no GPU) |
| `"multi_worker"` | `MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`   |

Keras shards a `tf.data` dataset given to `fit` over the replicas, so the
batch size of the dataset is the *global* batch. Keras divides a loss that
its loss wrapper reduces by the number of replicas before the gradients are
summed across replicas; `keras_yolo.models.YoloModel` does the same for the
YOLO losses, so the learning rate does not depend on the replica count.

`MultiWorkerMirroredStrategy` must be created before any other TF op runs
(TF: "Collective ops must be configured at program startup"): create it
first with `make_strategy` and pass the object to `train` (the CLI does).

XLA: a `MirroredStrategy` over several *CPU* devices cannot compile the
train step with XLA (TF raises "Trying to access resource ... located in
device CPU:1"); `resolve_jit_compile("auto", strategy)` turns it off there
and on everywhere else.
"""

import json
import logging
import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")

_logger = logging.getLogger("training")


def _num_workers():
    config = os.environ.get("TF_CONFIG")
    if not config:
        return 1
    try:
        cluster = json.loads(config).get("cluster", {})
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): "
                         f"{config!r}.") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def worker_shard():
    """`(num_workers, index)` of this process among TF_CONFIG's workers
    (the chief first, then worker 0, 1, ...), the `shard` of
    `keras_yolo.data.load` that gives each worker its own files; None with
    one worker.

    Example:
        >>> # TF_CONFIG: cluster {"chief": [a], "worker": [b, c]}, task worker 1
        >>> worker_shard()
        (3, 2)
    """
    workers = _num_workers()
    if workers < 2:
        return None
    kind, index, _ = task()
    has_chief = bool(json.loads(os.environ["TF_CONFIG"]).get(
        "cluster", {}).get("chief"))
    if kind == "chief":
        return workers, 0
    return workers, index + (1 if has_chief else 0)


def task():
    """`(type, index, is_chief)` of this process in TF_CONFIG's cluster
    (`("worker", 0, True)` without TF_CONFIG). The chief is the `chief`
    task, or worker 0 when the cluster has none."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return "worker", 0, True
    config = json.loads(config)
    info = config.get("task", {})
    kind, index = info.get("type", "worker"), int(info.get("index", 0))
    has_chief = bool(config.get("cluster", {}).get("chief"))
    chief = kind == "chief" or (kind == "worker" and index == 0
                                and not has_chief)
    return kind, index, chief


def make_strategy(name="auto", devices=None):
    """Returns the `tf.distribute.Strategy` called `name` (see the table).

    Args:
        name: one of `STRATEGIES`.
        devices: devices for `"mirrored"` (default: every GPU, or every
            logical CPU when there is no GPU).

    Example:
        >>> strategy = make_strategy("mirrored")
        >>> with strategy.scope():
        ...     model = build()
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}; "
                         f"got {name!r}.")
    if name == "auto":
        if _num_workers() > 1:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        if _num_workers() < 1:
            _logger.warning("multi_worker strategy without TF_CONFIG: a "
                            "single local worker.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices(
            "CPU"))]
    return tf.distribute.MirroredStrategy(devices=list(devices))


def _replica_devices(strategy):
    try:
        devices = strategy.extended.worker_devices
    except (RuntimeError, AttributeError, NotImplementedError):
        devices = ()  # the default strategy: whatever device TF places on
    return [str(d) for d in devices]


def describe(strategy):
    """A short human description, e.g. `"MirroredStrategy x2 (CPU:0, CPU:1)"`."""
    devices = [d.split("/")[-1].replace("device:", "")
               for d in _replica_devices(strategy)]
    return (f"{type(strategy).__name__} x{strategy.num_replicas_in_sync}"
            + (f" ({', '.join(devices)})" if devices else ""))


def jit_compile_works(strategy):
    """False where XLA cannot compile a replicated step: several replicas
    placed on CPU devices (resources live on CPU:1 ... but XLA compiles for
    one host CPU device)."""
    if strategy.num_replicas_in_sync <= 1:
        return True
    devices = _replica_devices(strategy)
    return not any("CPU" in d.upper() for d in devices)


def resolve_jit_compile(jit_compile, strategy):
    """`"auto"` -> XLA on GPUs where it works under `strategy`, graph mode on
    CPU; `True` where XLA cannot work -> a clear error; `False` -> False.

    On CPU, graph mode is the faster path: XLA compiles its own convolutions
    instead of calling oneDNN's and cannot use `ConvBNAct`'s fused batch
    norm (a yolov5n step at 320 px ran at 0.54x to 0.84x of graph mode's
    speed, `benchmarks/bench_train_step.py --modes graph,xla`), and its first
    step compiles for longer."""
    if jit_compile == "auto":
        if not tf.config.list_physical_devices("GPU"):
            logging.getLogger("training").info(
                "jit_compile='auto': no GPU, training in graph mode (faster "
                "than XLA on CPU)")
            return False
        return jit_compile_works(strategy)
    if jit_compile not in (True, False):
        raise ValueError(f"`jit_compile` must be True, False or 'auto'; "
                         f"got {jit_compile!r}.")
    if jit_compile and not jit_compile_works(strategy):
        raise ValueError(
            f"jit_compile=True cannot work under {describe(strategy)}: XLA "
            "fails on a step replicated over several CPU devices ('Trying "
            "to access resource ... located in device CPU:1'). Use "
            "jit_compile='auto' or False.")
    return bool(jit_compile)
