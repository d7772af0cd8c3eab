"""Training keras-yolo detectors: strategies, schedules, EMA, checkpoints,
COCO evaluation and run directories. `python -m training --help`.

    >>> import training
    >>> result = training.train(build_model, loss, train_ds, val_data=val_ds,
    ...                         postprocess=detect_fn, epochs=30)

Names are imported lazily, so `python -m training --help` does not load
TensorFlow.
"""

import importlib

_EXPORTS = {
    "make_run_dir": "training.run", "read_history": "training.run",
    "setup_logging": "training.run", "WarmupDecay": "training.schedules",
    "YoloV5Schedule": "training.schedules", "WarmRestarts": "training.schedules",
    "YoloSGD": "training.optimizer",
    "STRATEGIES": "training.strategy", "jit_compile_works": "training.strategy",
    "make_strategy": "training.strategy",
    "resolve_jit_compile": "training.strategy",
    "TrainResult": "training.trainer", "batch_dataset": "training.trainer",
    "ema_weights": "training.trainer", "make_optimizer": "training.trainer",
    "train": "training.trainer", "make_recipe": "training.recipes",
    "run_demo": "training.demo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
