"""Inference of an export: TFLite accuracy vs Keras, and latency vs ultralytics.

    # fp32/fp16/int8 TFLite against the Keras model on the shapes validation
    # set (mAP@0.5:0.95 delta, box differences, latency, file size):
    python benchmarks/bench_inference.py accuracy --model runs/demo/model.keras \
        --export runs/demo/export [--int8-variants --calibration-images D]

    # SavedModel and TFLite latency at 640 px, batch 1 and 8, decode + NMS
    # included, against ultralytics yolov5n (fused forward +
    # non_max_suppression) with the same weights (load_yolov5):
    python benchmarks/bench_inference.py latency [--rounds 10]

Both print our numbers, the reference's and the ratio, the load average
before and after (the machine may be shared), and write a JSON report.
`latency` also prints the floor of the forward pass: the network's FLOPs
(`keras_yolo.models.flops`, 2 x multiply-accumulates) over the machine's
measured peak (`machine_peak_flops`: the best rate of a large float32 matmul
with the same threads), per batch, beside each contestant's time.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_average():
    return [round(v, 2) for v in os.getloadavg()]


# --------------------------------------------------------------- accuracy

def _iou(a, b):
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(
        a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(
        a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def matched_differences(reference, other, min_score=0.1):
    """Largest |box| and |score| difference over the reference's
    detections scoring >= `min_score` and their same-class best-IoU match
    (IoU > 0.5) in `other`; and the share of them matched."""
    box, score, matched, total = [], [], 0, 0
    for i in range(len(reference["num_detections"])):
        n, m = int(reference["num_detections"][i]), int(
            other["num_detections"][i])
        keep = reference["scores"][i, :n] >= min_score
        ref_boxes = reference["boxes"][i, :n][keep]
        ref_cls = reference["classes"][i, :n][keep]
        ref_scores = reference["scores"][i, :n][keep]
        total += len(ref_boxes)
        if not len(ref_boxes) or not m:
            continue
        iou = _iou(ref_boxes, other["boxes"][i, :m])
        iou[ref_cls[:, None] != other["classes"][i, :m][None, :]] = 0
        best = iou.argmax(1)
        for j, k in enumerate(best):
            if iou[j, k] > 0.5:
                matched += 1
                box.append(np.abs(ref_boxes[j] - other["boxes"][i, k]).max())
                score.append(abs(ref_scores[j] - other["scores"][i, k]))
    return {"max_box_px": float(max(box, default=0.0)),
            "median_box_px": float(np.median(box)) if box else 0.0,
            "max_score": float(max(score, default=0.0)),
            "matched": matched, "reference_detections": total}


def tflite_detector(path):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner()
    times = []

    def detect(images):
        outs = []
        for image in np.asarray(images, np.float32):
            start = time.perf_counter()
            outs.append(runner(images=image[None]))
            times.append(time.perf_counter() - start)
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    return detect, times


def _time_tflite(path, image, runs=30):
    """Median ms of `runs` invocations in a tight loop (timings taken
    during the evaluation also pay for TF's threads still spinning)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner()
    runner(images=image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(images=image)
        times.append(time.perf_counter() - start)
    return round(1e3 * statistics.median(times), 2)


def accuracy(args):
    import keras
    import tensorflow as tf

    from keras_yolo import data, metrics
    from serving.detector import (build_detector, decode_config_path,
                                  load_decode_config)

    with open(os.path.join(args.export, "export.json")) as f:
        report = json.load(f)
    nms = report["nms"]
    model = keras.saving.load_model(args.model, compile=False)
    config = load_decode_config(decode_config_path(args.model))
    size = int(config["input_shape"][0])
    num_classes = int(config["num_classes"])
    detector = build_detector(model, config, "xyxy", **nms)
    limit = np.array([size, size] * 2, np.float32)

    def keras_detect(images):
        out = {k: v.numpy() for k, v in detector(images).items()}
        valid = out["classes"][..., None] >= 0
        out["boxes"] = np.where(valid, np.clip(out["boxes"], 0, limit), -1)
        return out

    val = data.shapes(num_images=args.val_images, image_size=size,
                      num_classes=num_classes, seed=args.val_seed,
                      bounding_box_format="xyxy").batch(16).cache()
    files = {p: os.path.join(args.export, f"model_{p}.tflite")
             for p in ("fp32", "fp16", "int8")}
    if args.int8_variants:
        # What must stay float: nothing (all int8), the default (decoding
        # and NMS), the default plus the head convolutions.
        from serving.export import INT8_FLOAT_SCOPES

        for name, scopes in (("int8_all", ()),
                             ("int8_head_float",
                              (*INT8_FLOAT_SCOPES, "head"))):
            files[name] = _int8_variant(model, config, nms, args, size,
                                        name, scopes)
    results = {"load_before": load_average(), "model": args.model,
               "val_images": args.val_images, "nms": nms}
    detections = {}

    def run(name, fn):
        outs = []

        def collect(images):
            out = fn(images)
            outs.append(out)
            return out

        start = time.perf_counter()
        result = metrics.evaluate(collect, val, "xyxy", num_classes,
                                  max_detections=100)
        detections[name] = {k: np.concatenate([o[k] for o in outs])
                            for k in outs[0]}
        return result, time.perf_counter() - start

    first_image = next(iter(val))[0][:1].numpy()
    keras_map, seconds = run("keras", keras_detect)
    results["keras"] = {"map": keras_map["map"], "map50": keras_map["map50"],
                        "seconds": round(seconds, 2)}
    for name, path in files.items():
        if not os.path.exists(path):
            continue
        fn, times = tflite_detector(path)
        got, _ = run(name, fn)
        results[name] = {
            "map": got["map"], "map50": got["map50"],
            "delta_map": got["map"] - keras_map["map"],
            "delta_map50": got["map50"] - keras_map["map50"],
            **matched_differences(detections["keras"], detections[name]),
            "eval_median_ms": round(1e3 * statistics.median(times[5:]), 2),
            "median_ms": _time_tflite(path, first_image),
            "bytes": os.path.getsize(path)}
        print(name, json.dumps(results[name]), flush=True)
    results["load_after"] = load_average()
    print(json.dumps(results, indent=2))
    _write(args.report or os.path.join(args.export, "accuracy.json"),
           results)
    del tf


def _int8_variant(model, config, nms, args, size, name, scopes):
    """An int8 file whose ops named under `scopes` stay float."""
    import serving.export as export_lib
    from serving.detector import build_detector
    from serving.signatures import DetectorModule

    module = DetectorModule(build_detector(model, config, "xyxy", **nms),
                            ["x"] * int(config["num_classes"]))
    path = os.path.join(args.export, f"model_{name}.tflite")
    calibration = export_lib.calibration_dataset(args.calibration_images,
                                                 (size, size))
    saved = export_lib.INT8_FLOAT_SCOPES
    export_lib.INT8_FLOAT_SCOPES = tuple(scopes)
    try:
        export_lib.export_tflite(module, path, "int8", calibration)
    finally:
        export_lib.INT8_FLOAT_SCOPES = saved
    return path


def _write(path, results):
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"report: {path}")


# ---------------------------------------------------------------- latency

def machine_peak_flops(size=2048, repeats=5):
    """FLOP/s of the best of `repeats` float32 `size` x `size` matmuls
    (2 size³ FLOPs each) with TensorFlow's current threads: the machine's
    practical peak, the denominator of the inference floor."""
    import tensorflow as tf

    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    matmul = tf.function(lambda: tf.matmul(a, b))
    matmul().numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def latency(args):
    import tensorflow as tf

    # Same threads for every contestant: torch with 2 threads slows 10x
    # when the 2 cores are shared (PEERS.md); set before TF runs any op.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import yolov5_reference

    from keras_yolo.weights import load_yolov5
    from serving.detector import build_detector
    from serving.export import export_detector

    ref = yolov5_reference.load()
    torch = ref.torch
    torch.set_num_threads(args.threads)
    import yolov5

    torch.manual_seed(0)
    yaml = os.path.join(os.path.dirname(yolov5.__file__), "models",
                        "yolov5n.yaml")
    peer = ref.yolo.Model(yaml, ch=3, nc=80).eval()
    size = args.size
    keras_model = load_yolov5(peer, input_shape=(size, size, 3))
    peer = peer.fuse().eval()
    nms = {"conf_thres": args.conf, "iou_thres": args.iou,
           "max_det": args.max_det}
    detector = build_detector(keras_model, keras_model.decode_config, "xyxy",
                              **nms)
    out = args.out or tempfile.mkdtemp(prefix="bench_inference_")
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 1, (4, size, size, 3)).astype(np.float32)
    export_detector(detector, out, [f"class_{i}" for i in range(80)], "xyxy",
                    tflite=tuple(args.tflite), calibration_images=calibration)
    sm = tf.saved_model.load(os.path.join(out, "saved_model"))
    tensor_fn, bytes_fn = (sm.signatures["serving_tensor"],
                           sm.signatures["serving_default"])
    from ai_edge_litert.interpreter import Interpreter

    lite = {p: Interpreter(model_path=os.path.join(
        out, f"model_{p}.tflite"), num_threads=args.threads)
        .get_signature_runner() for p in args.tflite}
    images = {b: rng.uniform(0, 1, (b, size, size, 3)).astype(np.float32)
              for b in args.batch}
    encoded = {b: [tf.io.encode_jpeg(tf.cast(i * 255, tf.uint8)).numpy()
                   for i in images[b]] for b in args.batch}

    def peer_call(x):
        with torch.no_grad():
            pred = peer(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))[0]
            # yolov5's NMS without its wall-clock limit (PEERS.md)
            return yolov5_reference.reference_nms(
                pred, conf_thres=args.conf, iou_thres=args.iou,
                max_det=args.max_det)

    contestants = {
        "saved_model": lambda b: tensor_fn(images=tf.constant(images[b])),
        "saved_model_jpeg": lambda b: bytes_fn(
            images=tf.constant(encoded[b])),
        **{f"tflite_{p}": (lambda p: lambda b: [
            lite[p](images=i[None]) for i in images[b]])(p)
           for p in args.tflite},
        "ultralytics": lambda b: peer_call(images[b]),
    }
    counts = {name: {b: sum(_count(fn(b), name)) for b in args.batch}
              for name, fn in contestants.items()}  # warm up, and check
    with torch.no_grad():  # how much work NMS has (objectness > conf)
        pred = peer(torch.from_numpy(images[args.batch[0]].transpose(
            0, 3, 1, 2).copy()))[0]
        candidates = int((pred[..., 4] > args.conf).sum())
    times = {name: {b: [] for b in args.batch} for name in contestants}
    load_before = load_average()
    for _ in range(args.rounds):  # alternating rounds
        for b in args.batch:
            for name, fn in contestants.items():
                start = time.perf_counter()
                fn(b)
                times[name][b].append(time.perf_counter() - start)
    results = {"size": size, "rounds": args.rounds, "threads": args.threads,
               "nms": nms, "nms_candidates_batch_%d" % args.batch[0]:
               candidates, "load_before": load_before,
               "load_after": load_average(), "detections": counts,
               "median_ms": {n: {b: round(1e3 * statistics.median(t), 1)
                                 for b, t in v.items()}
                             for n, v in times.items()}}
    from keras_yolo.models.flops import flops

    network = flops(keras_model, (size, size, 3))
    peak = machine_peak_flops()
    results["floor"] = {
        "network_gflops_per_image": round(network / 1e9, 3),
        "machine_peak_gflops": round(peak / 1e9, 1),
        "forward_floor_ms": {b: round(1e3 * network * b / peak, 2)
                             for b in args.batch}}
    peer_ms = results["median_ms"]["ultralytics"]
    results["ratio_vs_ultralytics"] = {
        n: {b: round(v[b] / peer_ms[b], 2) for b in v}
        for n, v in results["median_ms"].items()}
    print(json.dumps(results, indent=2))
    for name, by_batch in results["median_ms"].items():
        print(f"{name:18s} " + "  ".join(
            f"batch {b}: {ms:8.1f} ms (x{results['ratio_vs_ultralytics'][name][b]:.2f})"
            for b, ms in by_batch.items()))
    floor = results["floor"]
    print(f"floor: {floor['network_gflops_per_image']} GFLOPs/image over "
          f"{floor['machine_peak_gflops']} GFLOP/s measured peak "
          f"({args.threads} threads): " + "  ".join(
              f"batch {b}: {ms} ms (ours x{results['median_ms']['saved_model'][b] / ms:.1f} "
              "the floor)" for b, ms in floor["forward_floor_ms"].items()))
    _write(args.report or os.path.join(out, "latency.json"), results)


def _count(out, name):
    """Detections per image (a list), to check the contestants agree."""
    if name == "ultralytics":
        return [int(len(d)) for d in out]
    if isinstance(out, list):
        return [int(o["num_detections"][0]) for o in out]
    return [int(n) for n in out["num_detections"].numpy()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    acc = sub.add_parser("accuracy", help="TFLite vs Keras on shapes")
    acc.add_argument("--model", required=True)
    acc.add_argument("--export", required=True)
    acc.add_argument("--val-images", type=int, default=128)
    acc.add_argument("--val-seed", type=int, default=1000,
                     help="the demo's validation seed (seed + 1000)")
    acc.add_argument("--int8-variants", action="store_true",
                     help="also build and score int8 files with nothing, "
                     "or also the head convolutions, kept float")
    acc.add_argument("--calibration-images",
                     help="for --int8-variants (as the export's)")
    acc.add_argument("--report")
    lat = sub.add_parser("latency", help="640 px latency vs ultralytics")
    lat.add_argument("--size", type=int, default=640)
    lat.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    lat.add_argument("--rounds", type=int, default=10)
    lat.add_argument("--threads", type=int, default=1,
                     help="threads of every contestant (default 1: fair "
                     "on a shared machine)")
    lat.add_argument("--tflite", nargs="*", default=["fp32", "fp16"])
    lat.add_argument("--conf", type=float, default=0.25)
    lat.add_argument("--iou", type=float, default=0.45)
    lat.add_argument("--max-det", type=int, default=300)
    lat.add_argument("--out")
    lat.add_argument("--report")
    args = parser.parse_args(argv)
    return {"accuracy": accuracy, "latency": latency}[args.command](args)


if __name__ == "__main__":
    main()
