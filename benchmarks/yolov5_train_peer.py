"""Runs ultralytics yolov5 7.0.14 `train.py` offline on CPU, from scratch, with its defaults.

    .venv/bin/python benchmarks/yolov5_train_peer.py --data D.yaml --img 320 --batch-size 16 \
        --epochs 30 --project runs/peer --name raccoon

What it repairs (see ../shared/PEERS.md): stub modules for `roboflow` and `huggingface_hub`
(imported at load, never called with `--weights ''` and a local YAML), no requirement
installs, no font download, `np.trapz` for numpy 2, checkpoints loaded with
`weights_only=False`, the torchvision NMS op (tests/yolov5_reference.py), and NMS without
its wall-clock limit. Validation runs only after the last epoch (yolov5's `--noval` crashes
in 7.0.14), so the wall time is the training's.
"""

import argparse
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

os.environ.setdefault("ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS", "1")
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
os.environ.setdefault("YOLOv5_VERBOSE", "False")


STUBBED = ("roboflow", "huggingface_hub", "sahi")


class _Anything(types.ModuleType):
    """A module whose every attribute is a harmless class: enough for
    import-time `from x.y import Z`, never called on this path."""

    __path__ = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (Exception,), {})


class _StubFinder:
    def find_spec(self, fullname, path=None, target=None):
        import importlib.machinery

        if fullname.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Anything(spec.name)

    def exec_module(self, module):
        pass


def install_stubs():
    sys.meta_path.insert(0, _StubFinder())


def load_train():
    import numpy as np

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    install_stubs()
    import yolov5_reference

    yolov5_reference.load()
    import yolov5.utils.general as general

    general.check_font = lambda *a, **k: None
    general.check_requirements = lambda *a, **k: None
    general.time = yolov5_reference._FrozenClock(general.time) if hasattr(
        yolov5_reference, "_FrozenClock") else general.time
    import yolov5.train as train

    train.check_font = lambda *a, **k: None
    import yolov5.utils.downloads as downloads

    # Local files only: no hub look-up for '' or for the run's own best.pt.
    train.attempt_download_from_hub = lambda *a, **k: None
    downloads.attempt_download_from_hub = lambda *a, **k: None
    return train


def skip_validation_until_last_epoch(train, epochs):
    """Replaces `train.validate.run` for every epoch but the last (an
    all-zero result: yolov5 keeps the last checkpoint then)."""
    real = train.validate.run
    calls = {"n": 0}

    def run(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] < epochs:
            import numpy as np

            nc = len(kwargs.get("data", {}).get("names", [])) or 1
            # val.run's (results, maps, map50s, times) of yolov5 7.0.14.
            return (0, 0, 0, 0, 0, 0, 0), np.zeros(nc), np.zeros(nc), (0, 0, 0)
        return real(*args, **kwargs)

    train.validate.run = run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--cfg", default="yolov5n.yaml")
    parser.add_argument("--project", required=True)
    parser.add_argument("--name", default="exp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    train = load_train()
    import torch

    torch.set_num_threads(args.threads)
    skip_validation_until_last_epoch(train, args.epochs)
    train.run(weights="", cfg=args.cfg, data=args.data, imgsz=args.img,
              batch_size=args.batch_size, epochs=args.epochs, workers=0,
              device="cpu", noplots=True, project=args.project, name=args.name,
              exist_ok=True, seed=args.seed, hyp=os.path.join(
                  os.path.dirname(train.__file__), "data", "hyps",
                  "hyp.scratch-low.yaml"))
    print(os.path.join(args.project, args.name, "weights", "last.pt"))


if __name__ == "__main__":
    main()
