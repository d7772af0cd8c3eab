"""Training keras-yolo detectors: strategies, schedules, EMA, checkpoints,
COCO evaluation and run directories. `python -m training --help`."""

from training.run import make_run_dir, read_history, setup_logging
from training.schedules import WarmupDecay
from training.strategy import (STRATEGIES, jit_compile_works, make_strategy,
                               resolve_jit_compile)
from training.trainer import (TrainResult, batch_dataset, ema_weights,
                              make_optimizer, train)
