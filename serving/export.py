"""`python -m serving export`: a detector to a TF Serving SavedModel and TFLite.

    python -m serving export --model runs/demo/model.keras --out runs/demo/export

The SavedModel's `serving_default` signature takes `images` `(B, H, W, 3)`
float32 in [0, 1] and returns exactly `boxes` (B, K, 4), `scores` (B, K),
`classes` (B, K) int32 and `num_detections` (B,) int32, padded with -1: the
decode and NMS run inside, as core TensorFlow ops (checked by `graph_ops` /
`check_core_ops`), so TF Serving or any `tf.saved_model.load` runs it without
keras-yolo. The TFLite file has the same signature at batch 1, built-in ops
only.
"""

import argparse
import json
import logging
import os
import shutil
import tempfile
import time

_logger = logging.getLogger("serving")

SIGNATURE = "serving_default"
# Ops that run Python code: a SavedModel holding them would need the
# project installed where it is served.
PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")


def export_saved_model(detector, path, batch_size=None):
    """Writes `detector` (images -> detections dict) as a SavedModel with a
    `serving_default` signature; returns `path`.

    Args:
        detector: a Keras model built by `serving.build_detector`.
        path: output directory (replaced if it exists).
        batch_size: static batch of the signature (None: any).
    """
    import keras
    import tensorflow as tf

    shape = tuple(detector.input_shape[1:])
    if os.path.exists(path):
        shutil.rmtree(path)
    archive = keras.export.ExportArchive()
    archive.track(detector)
    archive.add_endpoint(
        SIGNATURE, lambda images: detector(images, training=False),
        input_signature=[tf.TensorSpec((batch_size, *shape), tf.float32,
                                       name="images")])
    archive.write_out(path, verbose=False)
    return path


def export_tflite(detector, path, quantize=False):
    """Converts `detector` to a TFLite flatbuffer at batch 1 (built-in ops
    only; `quantize=True`: dynamic-range int8 weights). Returns `path`.

    Converted from a batch-1 SavedModel (converting Keras-backed concrete
    functions directly gave uninitialized weights in TF 2.21)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(detector, os.path.join(tmp, "sm"), batch_size=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            os.path.join(tmp, "sm"), signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        flatbuffer = converter.convert()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


def graph_ops(path):
    """Sorted op types of a SavedModel: its graph and every function in its
    library (the bodies of the signature, loops and conditionals)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    ops = set()
    for meta in proto.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for function in meta.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return sorted(ops)


def check_core_ops(path):
    """Raises if the SavedModel uses an op that is not a registered core TF
    op (a custom kernel) or one that runs Python; returns the op list."""
    from tensorflow.python.framework import op_def_registry

    ops = graph_ops(path)
    functions = _function_names(path)
    unknown = [op for op in ops if op not in functions
               and op_def_registry.get(op) is None]
    python = [op for op in ops if op in PYTHON_OPS]
    if unknown or python:
        raise ValueError(f"{path}: ops outside core TensorFlow: "
                         f"{unknown + python}.")
    return ops


def _function_names(path):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return {fn.signature.name for meta in proto.meta_graphs
            for fn in meta.graph_def.library.function}


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(path) for f in files)


def export(model_path, out, decode_path=None, formats=("saved_model",
                                                        "tflite"),
           bounding_box_format="xyxy", quantize=False, **nms_kwargs):
    """Loads a `.keras` model and its decode configuration and writes
    `out/saved_model/`, `out/model.tflite` and `out/export.json` (sizes,
    op list, signature, timings). Returns the `export.json` dict."""
    import keras

    from serving.detector import (build_detector, decode_config_path,
                                  load_decode_config)

    start = time.perf_counter()
    model = keras.saving.load_model(model_path, compile=False)
    config = load_decode_config(decode_path or decode_config_path(model_path))
    detector = build_detector(model, config, bounding_box_format,
                              **nms_kwargs)
    return export_detector(detector, out, formats, quantize,
                           extra={"model": os.path.abspath(model_path),
                                  "decode": config,
                                  "load_seconds": round(
                                      time.perf_counter() - start, 2)})


def export_detector(detector, out, formats=("saved_model", "tflite"),
                    quantize=False, extra=None):
    """`export` for an already built detector."""
    os.makedirs(out, exist_ok=True)
    report = {"input_shape": [None, *detector.input_shape[1:]],
              "outputs": ["boxes", "scores", "classes", "num_detections"],
              "signature": SIGNATURE,
              "nms": detector.layers[-1].get_config()
              if hasattr(detector.layers[-1], "conf_thres") else None,
              **(extra or {})}
    if "saved_model" in formats:
        start = time.perf_counter()
        path = export_saved_model(detector, os.path.join(out, "saved_model"))
        report["saved_model"] = {
            "path": path, "bytes": _size(path),
            "ops": check_core_ops(path),
            "seconds": round(time.perf_counter() - start, 2)}
        _logger.info("SavedModel %s: %.1f MB, %d op types, core TF only",
                     path, report["saved_model"]["bytes"] / 1e6,
                     len(report["saved_model"]["ops"]))
    if "tflite" in formats:
        start = time.perf_counter()
        path = export_tflite(detector, os.path.join(out, "model.tflite"),
                             quantize)
        report["tflite"] = {"path": path, "bytes": _size(path),
                            "quantized": bool(quantize),
                            "seconds": round(time.perf_counter() - start, 2)}
        _logger.info("TFLite %s: %.1f MB", path,
                     report["tflite"]["bytes"] / 1e6)
    with open(os.path.join(out, "export.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    return report


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export", help="export a .keras detector to SavedModel and TFLite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="the trained .keras model (raw head outputs)")
    parser.add_argument("--decode", help="decode configuration JSON "
                        "(default: <model>.decode.json)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--format", nargs="+", default=["saved_model",
                                                        "tflite"],
                        choices=["saved_model", "tflite"])
    parser.add_argument("--bounding-box-format", default="xyxy",
                        help="format of the exported boxes (default xyxy "
                        "pixels)")
    parser.add_argument("--conf-thres", type=float, default=0.25)
    parser.add_argument("--iou-thres", type=float, default=0.45)
    parser.add_argument("--max-det", type=int, default=100)
    parser.add_argument("--quantize", action="store_true",
                        help="TFLite with int8 dynamic-range weights")
    parser.set_defaults(func=run)
    return parser


def run(args):
    from serving.logs import setup_logging

    setup_logging()
    try:
        report = export(args.model, args.out, args.decode, args.format,
                        args.bounding_box_format, args.quantize,
                        conf_thres=args.conf_thres, iou_thres=args.iou_thres,
                        max_det=args.max_det)
    except (ValueError, FileNotFoundError) as error:
        print(f"export: error: {error}")
        return 2
    print(json.dumps({k: report[k] for k in ("saved_model", "tflite")
                      if k in report}, indent=2, default=str))
    return 0
