"""YoloV5Loss (loss + gradient) against ultralytics' ComputeLoss, honestly.

    .venv/bin/python benchmarks/bench_v5_loss.py            # the issue-19 case
    .venv/bin/python benchmarks/bench_v5_loss.py --sweep    # scaling plots

The case: batch 16, 640 px, 80 classes, 8 real truths per image. Ours gets
them padded to `--max-boxes 100` rows (label -1), as a padded dataset
delivers them; ComputeLoss gets only the real rows, as its dataloader does.
Both see the same random raw outputs. Ours runs as a `tf.function` returning
the loss and the gradients (graph mode, then XLA), ComputeLoss as torch eager
forward + `backward()` (its normal use). Both use the same thread count.

Contenders alternate in one process (`harness.alternate`: rounds, medians),
the load average and thread settings are recorded, and a busy machine is
refused (`--allow-busy` times anyway and flags the result). The memory floor
is the time to copy the prediction tensors once at the machine's measured
copy bandwidth: reading them once and writing their gradient once.

`--sweep` times ours (graph) and ComputeLoss against the real truths per
image (0, 8, 64, 500, padding 100 or the truths) and the batch size (1 to
64, 8 truths), and writes `benchmarks/out/v5_loss_scaling.png`.

Prints one JSON line per case (also appended to benchmarks/out/
bench_v5_loss.jsonl). Needs the parity extra (bash .ci/install_parity).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_yolo.anchors import YOLOV5_ANCHORS  # noqa: E402
from keras_yolo.losses import YoloV5Loss  # noqa: E402

STRIDES = (8, 16, 32)
SWEEP_TRUTHS = (0, 8, 64, 500)
SWEEP_BATCHES = (1, 2, 4, 8, 16, 32, 64)


def make_case(batch, size, num_classes, truths, max_boxes, seed=0):
    """Raw outputs, padded ground truth (ours) and real targets (peer)."""
    rng = np.random.default_rng(seed)
    raw = []
    for s in STRIDES:
        p = rng.normal(0, 1.5, (batch, size // s, size // s, 3,
                                5 + num_classes)).astype(np.float32)
        p[..., 4] -= 4.0  # objectness low, like a trained head
        raw.append(p)
    rows = max(max_boxes, truths)
    boxes = np.zeros((batch, rows, 4), np.float32)
    labels = np.full((batch, rows), -1, np.int32)
    boxes[:, :truths, :2] = rng.uniform(0.05, 0.95, (batch, truths, 2))
    boxes[:, :truths, 2:] = np.exp(rng.uniform(np.log(0.02), np.log(0.6),
                                               (batch, truths, 2)))
    labels[:, :truths] = rng.integers(0, num_classes, (batch, truths))
    real = labels >= 0
    targets = np.concatenate([
        np.nonzero(real)[0][:, None], labels[real][:, None], boxes[real]],
        1).astype(np.float32)
    return raw, boxes, labels, targets


class Contenders:
    """Step callables of ours (graph, XLA) and ComputeLoss for one case."""

    def __init__(self, reference, raw, boxes, labels, targets, num_classes):
        torch = reference.load().torch
        self.criterion = reference.compute_loss(
            num_classes, YOLOV5_ANCHORS, STRIDES, reference.default_hyp())
        self.targets = torch.tensor(targets)
        self.torch_levels = [
            torch.tensor(p.transpose(0, 3, 1, 2, 4).copy(),
                         requires_grad=True) for p in raw]
        self.loss = YoloV5Loss(num_classes=num_classes,
                               scale_by_batch_size=True)
        self.y_true = {"boxes": tf.constant(boxes),
                       "labels": tf.constant(labels)}
        self.levels = [tf.constant(p) for p in raw]
        self.steps = {}

    def peer(self):
        for t in self.torch_levels:
            t.grad = None
        total, _ = self.criterion(self.torch_levels, self.targets)
        total.backward()
        return float(total)

    def ours(self, jit):
        if jit not in self.steps:
            @tf.function(jit_compile=jit)
            def step(y_true, levels):
                with tf.GradientTape() as tape:
                    tape.watch(levels)
                    value = self.loss(y_true, levels)
                return value, tape.gradient(value, levels)
            self.steps[jit] = step
        # The gradients are materialised as the step's outputs, as
        # backward() materialises .grad; neither is copied afterwards.
        return float(self.steps[jit](self.y_true, self.levels)[0])


def run_case(reference, args, batch, truths, max_boxes, modes, bandwidth):
    raw, boxes, labels, targets = make_case(
        batch, args.image_size, args.num_classes, truths, max_boxes)
    c = Contenders(reference, raw, boxes, labels, targets, args.num_classes)
    peer_value = c.peer()
    contenders = {"compute_loss": c.peer}
    result = dict(batch_size=batch, image_size=args.image_size,
                  num_classes=args.num_classes, truths_per_image=truths,
                  padded_rows=boxes.shape[1])
    for mode in modes:
        jit = mode == "xla"
        value = c.ours(jit)
        result[f"rel_diff_{mode}"] = float(f"{abs(value - peer_value) / max(abs(peer_value), 1e-12):.2g}")
        contenders[f"ours_{mode}"] = lambda jit=jit: c.ours(jit)
    times = harness.alternate(contenders, rounds=args.rounds,
                              repeats=args.repeats)
    peer = times["compute_loss"]["median"]
    pred_bytes = sum(p.nbytes for p in raw)
    floor = pred_bytes / bandwidth
    result.update(compute_loss_ms=round(peer * 1e3, 2),
                  floor_ms=round(floor * 1e3, 2))
    for mode in modes:
        ours = times[f"ours_{mode}"]["median"]
        result[f"ours_{mode}_ms"] = round(ours * 1e3, 2)
        result[f"ratio_{mode}"] = round(ours / peer, 3)
        result[f"floor_multiple_{mode}"] = round(ours / floor, 2)
    result["rounds_ms"] = {k: [round(x * 1e3, 1) for x in v["rounds"]]
                           for k, v in times.items()}
    return result


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, rows, xlabel in (
            (axes[0], "truths_per_image",
             [r for r in results if r["sweep"] == "truths"],
             "real truths per image (batch 16, padded to max(100, truths))"),
            (axes[1], "batch_size",
             [r for r in results if r["sweep"] == "batch"],
             "batch size (8 truths per image, padded to 100)")):
        x = [r[key] for r in rows]
        ax.plot(x, [r["ours_graph_ms"] for r in rows], "o-",
                label="YoloV5Loss (graph)")
        ax.plot(x, [r["compute_loss_ms"] for r in rows], "s-",
                label="ComputeLoss (torch)")
        ax.plot(x, [r["floor_ms"] for r in rows], "k:",
                label="memory floor (copy preds once)")
        ax.set_xscale("symlog", linthresh=1 if key == "truths_per_image"
                      else 1)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss + gradient, ms (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    load = results[-1]["machine"]["load_average"][0]
    busy = any(r["machine"]["busy"] for r in results)
    fig.suptitle(f"YOLOv5 objective, 640 px, 80 classes, "
                 f"{results[-1]['machine'].get('torch_threads')} threads; "
                 f"load {load}{'  (BUSY MACHINE)' if busy else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--truths", type=int, default=8,
                        help="real truths per image")
    parser.add_argument("--max-boxes", type=int, default=100,
                        help="rows ours gets (padding to this)")
    parser.add_argument("--modes", default="graph,xla",
                        help="ours: graph, xla or both")
    parser.add_argument("--rounds", type=int, default=None,
                        help="default 5 (3 with --sweep)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="default 3 (2 with --sweep)")
    parser.add_argument("--threads", type=int, default=harness.cores(),
                        help="intra-op threads of both frameworks")
    parser.add_argument("--allow-busy", action="store_true",
                        help="time even if the load exceeds the cores "
                             "(result flagged busy)")
    parser.add_argument("--sweep", action="store_true",
                        help="time vs truths and batch; write the PNG")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.sweep else 5
    if args.repeats is None:
        args.repeats = 2 if args.sweep else 3

    import yolov5_reference as reference

    harness.set_threads(args.threads)
    state = harness.check_quiet(args.allow_busy)
    bandwidth = harness.copy_bandwidth(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    if not args.sweep:
        result = run_case(reference, args, args.batch_size, args.truths,
                          args.max_boxes, modes, bandwidth)
        result["copy_gb_per_s"] = round(bandwidth / 1e9, 2)
        result["machine"] = harness.finish({**state,
                                            **harness.machine_state()})
        return harness.report(result, "bench_v5_loss")

    results = []
    cases = ([("truths", args.batch_size, t) for t in SWEEP_TRUTHS]
             + [("batch", b, args.truths) for b in SWEEP_BATCHES])
    for sweep, batch, truths in cases:
        result = run_case(reference, args, batch, truths, args.max_boxes,
                          ["graph"], bandwidth)
        result["sweep"] = sweep
        result["copy_gb_per_s"] = round(bandwidth / 1e9, 2)
        result["machine"] = harness.finish({**state,
                                            **harness.machine_state()})
        results.append(harness.report(result, "bench_v5_loss_sweep"))
    plot(results, os.path.join(harness.OUT_DIR, "v5_loss_scaling.png"))
    return results


if __name__ == "__main__":
    main()
