"""yolov5n train step (forward + loss + backward + SGD) against ultralytics yolov5.

    .venv/bin/python benchmarks/bench_train_step.py [--image-size 320] [--modes graph,xla]

Both sides: yolov5n (v6.0 yaml: depth 0.33, width 0.25), 80 classes, the same
random images (batch 16) and 8 real truths per image; SGD lr 0.01, momentum
0.937, Nesterov; the v5 objective with train.py's gain scaling. Ours is
`keras_yolo.models.yolov5` compiled with `YoloV5Loss` and trained with
`model.train_on_batch` (the step `model.fit` runs; ground truth padded to
`--max-boxes` rows), in graph mode and with `jit_compile=True` (`--modes`;
`graph_keras_bn` is graph mode without ConvBNAct's fused training path); ultralytics'
is `Model(yolov5n.yaml)` in train mode with `ComputeLoss`, `backward()` and
`optimizer.step()`. Same intra-op threads for both.

Contenders alternate in one process (benchmarks/harness.py), the load and
thread settings are recorded, a busy machine is refused unless
`--allow-busy`. Prints images/s of each and ours / ultralytics' throughput
(above 1: we are faster), plus the first-step (trace/compile) time of ours,
the CPU cores each side kept busy while timed (process CPU time over wall
time) and, with `--memory`, each contender's peak resident memory, measured
alone in a child process (`--peak-memory-of NAME`): its peak RSS and that
minus the RSS after the imports.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_CLASSES = 80
DEPTH, WIDTH = 0.33, 0.25  # yolov5n
LR, MOMENTUM = 0.01, 0.937  # hyp.scratch-low.yaml


def make_data(batch, size, truths, max_boxes, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
    boxes = np.zeros((batch, max_boxes, 4), np.float32)
    labels = np.full((batch, max_boxes), -1, np.int32)
    boxes[:, :truths, :2] = rng.uniform(0.1, 0.9, (batch, truths, 2))
    boxes[:, :truths, 2:] = rng.uniform(0.05, 0.4, (batch, truths, 2))
    labels[:, :truths] = rng.integers(0, NUM_CLASSES, (batch, truths))
    real = labels >= 0
    targets = np.concatenate([np.nonzero(real)[0][:, None],
                              labels[real][:, None], boxes[real]], 1)
    return images, boxes, labels, targets.astype(np.float32)


def ours_step(size, jit, images, boxes, labels):
    import keras

    from keras_yolo.losses import YoloV5Loss, scale_hyperparameters
    from keras_yolo.models.yolov5 import yolov5

    keras.utils.set_random_seed(0)
    model = yolov5(num_classes=NUM_CLASSES, input_shape=(size, size, 3),
                   depth_multiple=DEPTH, width_multiple=WIDTH)
    model.compile(
        keras.optimizers.SGD(LR, momentum=MOMENTUM, nesterov=True),
        loss=YoloV5Loss(num_classes=NUM_CLASSES, scale_by_batch_size=True,
                        **scale_hyperparameters(num_classes=NUM_CLASSES,
                                                image_size=size)),
        jit_compile=jit)
    x = tf.constant(images)
    y = {"boxes": tf.constant(boxes), "labels": tf.constant(labels)}
    return lambda: model.train_on_batch(x, y)


def peer_step(reference, size, images, targets):
    import yolov5

    torch = reference.torch
    torch.manual_seed(0)
    yaml = os.path.join(os.path.dirname(yolov5.__file__), "models",
                        "yolov5n.yaml")
    model = reference.yolo.Model(yaml, ch=3, nc=NUM_CLASSES).train()
    hyp = reference_hyp(size)
    model.hyp = hyp
    criterion = reference.loss.ComputeLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                                nesterov=True)
    x = torch.tensor(images.transpose(0, 3, 1, 2).copy())
    t = torch.tensor(targets)

    def step():
        optimizer.zero_grad()
        loss, _ = criterion(model(x), t)
        loss.backward()
        optimizer.step()
        return float(loss)

    return step


def reference_hyp(size):
    from keras_yolo.losses import scale_hyperparameters

    hyp = dict(box=0.05, obj=1.0, cls=0.5, anchor_t=4.0, cls_pw=1.0,
               obj_pw=1.0, fl_gamma=0.0, label_smoothing=0.0)
    hyp.update(scale_hyperparameters(num_classes=NUM_CLASSES,
                                     image_size=size))
    return hyp


@contextlib.contextmanager
def keras_batch_norm(enabled):
    """While tracing, ConvBNAct trains through Keras' BatchNormalization and
    tf.nn.silu instead of its fused path (mode `graph_keras_bn`: the A/B of
    keras_yolo/layers/conv_bn.py's fused training path)."""
    from keras_yolo.layers.conv_bn import ConvBNAct

    original = ConvBNAct.fused_training_applies
    if enabled:
        ConvBNAct.fused_training_applies = lambda self, training: False
    try:
        yield
    finally:
        ConvBNAct.fused_training_applies = original


def _status_mb(field):
    """/proc/self/status `field` (VmRSS: resident now; VmHWM: its peak, this
    process image only: getrusage's ru_maxrss keeps the parent's peak
    across fork + exec) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_memory(name, args, reference):
    """Builds one contender alone, runs 3 steps; its peak RSS in MB."""
    images, boxes, labels, targets = make_data(
        args.batch_size, args.image_size, args.truths, args.max_boxes)
    base = _status_mb("VmRSS")
    if name == "ultralytics":
        step = peer_step(reference, args.image_size, images, targets)
    else:
        step = ours_step(args.image_size, name == "ours_xla", images, boxes,
                         labels)
    with keras_batch_norm(name == "ours_graph_keras_bn"):
        step()
    for _ in range(2):
        step()
    peak = _status_mb("VmHWM")
    return {"peak_rss_mb": round(peak), "peak_minus_imports_mb":
            round(peak - base)}


def _memory_in_children(names, argv):
    out = {}
    for name in names:
        result = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *argv,
             "--peak-memory-of", name], capture_output=True, text=True)
        lines = [x for x in result.stdout.splitlines() if x.startswith("{")]
        out[name] = json.loads(lines[-1]) if lines else {
            "error": result.stderr[-300:]}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--truths", type=int, default=8)
    parser.add_argument("--max-boxes", type=int, default=100)
    parser.add_argument("--modes", default="graph,xla")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=harness.cores())
    parser.add_argument("--allow-busy", action="store_true")
    parser.add_argument("--memory", action="store_true",
                        help="also each contender's peak RSS, alone in a "
                        "child process")
    parser.add_argument("--peak-memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import yolov5_reference

    reference = yolov5_reference.load()
    harness.set_threads(args.threads)
    if args.peak_memory_of:
        print(json.dumps(peak_memory(args.peak_memory_of, args, reference)))
        return None
    state = harness.check_quiet(args.allow_busy)
    images, boxes, labels, targets = make_data(
        args.batch_size, args.image_size, args.truths, args.max_boxes)
    contenders = {"ultralytics": peer_step(reference, args.image_size,
                                           images, targets)}
    first_step = {}
    for mode in [m for m in args.modes.split(",") if m]:
        step = ours_step(args.image_size, mode == "xla", images, boxes,
                         labels)
        start = time.perf_counter()
        with keras_batch_norm(mode == "graph_keras_bn"):
            step()  # trace (and compile)
        first_step[mode] = round(time.perf_counter() - start, 1)
        contenders[f"ours_{mode}"] = step
    cpu = {}

    def timed_cpu(name, step):
        def run():
            start = time.process_time(), time.perf_counter()
            step()
            used = cpu.setdefault(name, [0.0, 0.0])
            used[0] += time.process_time() - start[0]
            used[1] += time.perf_counter() - start[1]
        return run

    times = harness.alternate(
        {k: timed_cpu(k, v) for k, v in contenders.items()},
        rounds=args.rounds, repeats=args.repeats)
    batch = args.batch_size
    peer_ips = batch / times["ultralytics"]["median"]
    result = dict(model="yolov5n", image_size=args.image_size,
                  batch_size=batch, ultralytics_images_per_s=round(
                      peer_ips, 2))
    for name in contenders:
        if name.startswith("ours_"):
            ips = batch / times[name]["median"]
            result[f"{name}_images_per_s"] = round(ips, 2)
            result[f"{name}_throughput_ratio"] = round(ips / peer_ips, 3)
    result["ours_first_step_s"] = first_step
    # Cores each side kept busy (warm-up included): below the thread count,
    # the step leaves cores idle (or, on a busy machine, is starved).
    result["cores_busy"] = {k: round(c / w, 2) for k, (c, w) in cpu.items()}
    result["rounds_s"] = {k: v["rounds"] for k, v in times.items()}
    result["machine"] = harness.finish({**state, **harness.machine_state()})
    if args.memory:
        forwarded = [a for a in (argv if argv is not None else sys.argv[1:])
                     if a != "--memory"]
        result["peak_memory"] = _memory_in_children(list(contenders),
                                                    forwarded)
    return harness.report(result, "bench_train_step")


if __name__ == "__main__":
    main()
