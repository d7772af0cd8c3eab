"""YoloV5Loss loss + gradient step time against ultralytics' ComputeLoss.

    .venv/bin/python benchmarks/bench_v5_loss.py [--batch-size 8] [--image-size 640]

Same random raw outputs (80 classes, three levels) and the same truths for
both; ours runs as a `tf.function` (with and without XLA), ComputeLoss as
torch eager forward + backward (its normal use). Each is warmed up, then
timed as the median of `--repeats` runs. Prints one JSON line with both times
and the ratio ours / reference (below 1: we are faster). Needs the parity
extra (bash .ci/install_parity).
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_yolo.anchors import YOLOV5_ANCHORS  # noqa: E402
from keras_yolo.losses import YoloV5Loss  # noqa: E402

STRIDES = (8, 16, 32)
NUM_CLASSES = 80


def _median_seconds(fn, repeats):
    fn()  # warm-up (tracing, XLA compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--truths", type=int, default=12,
                        help="truths per image")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (default: the harness's, "
                             "min(2, cores)); 1 avoids OpenMP spinning on a "
                             "busy machine")
    args = parser.parse_args(argv)

    import yolov5_reference as reference

    torch = reference.load().torch
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    rng = np.random.default_rng(0)
    size, batch, m = args.image_size, args.batch_size, args.truths
    raw = [rng.normal(0, 1.5, (batch, size // s, size // s, 3,
                               5 + NUM_CLASSES)).astype(np.float32)
           for s in STRIDES]
    boxes = np.concatenate([rng.uniform(0.05, 0.95, (batch, m, 2)),
                            np.exp(rng.uniform(np.log(0.02), np.log(0.6),
                                               (batch, m, 2)))],
                           -1).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (batch, m)).astype(np.int32)

    criterion = reference.compute_loss(NUM_CLASSES, YOLOV5_ANCHORS, STRIDES,
                                       reference.default_hyp())
    targets = torch.tensor(np.concatenate([
        np.repeat(np.arange(batch), m)[:, None], labels.reshape(-1, 1),
        boxes.reshape(-1, 4)], 1).astype(np.float32))
    torch_levels = [torch.tensor(p.transpose(0, 3, 1, 2, 4).copy(),
                                 requires_grad=True) for p in raw]

    def reference_step():
        for t in torch_levels:
            t.grad = None
        total, _ = criterion(torch_levels, targets)
        total.backward()

    loss = YoloV5Loss(num_classes=NUM_CLASSES, scale_by_batch_size=True)
    y_true = {"boxes": tf.constant(boxes), "labels": tf.constant(labels)}
    levels = [tf.constant(p) for p in raw]

    def make_step(jit):
        @tf.function(jit_compile=jit)
        def step(levels):
            with tf.GradientTape() as tape:
                tape.watch(levels)
                value = loss(y_true, levels)
            return value, tape.gradient(value, levels)
        return lambda: [g.numpy() for g in step(levels)[1]]

    ref_seconds = _median_seconds(reference_step, args.repeats)
    graph_seconds = _median_seconds(make_step(False), args.repeats)
    xla_seconds = _median_seconds(make_step(True), args.repeats)
    result = dict(
        batch_size=batch, image_size=size, truths_per_image=m,
        num_classes=NUM_CLASSES, torch_threads=torch.get_num_threads(),
        compute_loss_seconds=round(ref_seconds, 4),
        ours_graph_seconds=round(graph_seconds, 4),
        ours_xla_seconds=round(xla_seconds, 4),
        ratio_graph=round(graph_seconds / ref_seconds, 3),
        ratio_xla=round(xla_seconds / ref_seconds, 3),
        load_average=os.getloadavg()[0])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
