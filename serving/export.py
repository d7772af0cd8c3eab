"""`python -m serving export`: a detector to a TF Serving SavedModel and TFLite.

    python -m serving export --model runs/demo/model.keras --out runs/demo/export
        [--conf 0.25 --iou 0.45 --max-det 300 --agnostic --nms diou]
        [--tflite fp32 fp16 int8 --calibration-images "data/val/*.jpg"]

Writes `OUT/saved_model/` with two signatures (see `serving.signatures`):

* `serving_default`: `images` tf.string `(B,)` encoded JPEG/PNG/GIF/BMP
  images of any sizes -> `boxes` `(B, K, 4)` xyxy in each image's original
  pixels (clipped to it), `scores`, `classes`, `num_detections`,
  `class_names`;
* `serving_tensor`: `images` float32 `(B, H, W, 3)` in [0, 1], any H, W,
  same outputs.

Decoding, letterbox, network, box decoding, NMS and the inverse letterbox
run inside, as core TensorFlow ops (checked by `check_core_ops`): TF Serving
or any `tf.saved_model.load` runs it without keras-yolo. The class names
(`class_names.txt`) and the model configuration (`model_config.json`) are
assets of the SavedModel; the thresholds are recorded in `OUT/export.json`.

`--tflite` writes `OUT/model_{fp32,fp16,int8}.tflite`: batch 1, input the
letterboxed `(1, S, S, 3)` float image (`serving.letterbox.letterbox`), the
same outputs but `class_names` (boxes in input pixels, clipped to it), NMS
inside, TFLite built-in ops only (checked: no Flex/custom op). int8 is
full-integer quantization of the network calibrated on
`--calibration-images`; the box decoding and NMS stay float (see
`INT8_FLOAT_SCOPES`).

Class names: `--class-names FILE` (JSON list or one name a line), else
`class_names.json` beside the model, else `class_0`, `class_1`, ...
"""

import argparse
import glob
import json
import logging
import os
import shutil
import tempfile
import time

_logger = logging.getLogger("serving")

SIGNATURE = "serving_default"
TENSOR_SIGNATURE = "serving_tensor"
TFLITE_PRECISIONS = ("fp32", "fp16", "int8")
# Ops that run Python code: a SavedModel holding them would need the
# project installed where it is served.
PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Calibration images used for int8 (TFLite's guide: 100-500 suffice).
MAX_CALIBRATION_IMAGES = 200
# Keras layer names (they appear in TFLite tensor names) whose ops stay
# float in the int8 model: box decoding and NMS (see `_convert_int8`).
INT8_FLOAT_SCOPES = ("decode", "non_max_suppression")


def load_class_names(num_classes, path=None, model_path=None):
    """Class names of an export: `path` (a JSON list, a JSON dict with
    `class_names` or `names`, or one name a line), else `class_names.json`
    beside `model_path`, else `class_0` ... `class_{C-1}`."""
    if path is None and model_path is not None:
        candidate = os.path.join(os.path.dirname(os.path.abspath(
            model_path)), "class_names.json")
        path = candidate if os.path.exists(candidate) else None
    if path is None:
        return [f"class_{i}" for i in range(num_classes)]
    with open(path) as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}).") from None
        if isinstance(names, dict):
            names = names.get("class_names", names.get("names", names))
        if isinstance(names, dict):  # {"0": "cat", ...}
            names = [names[k] for k in sorted(names, key=int)]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(names, list) or len(names) != num_classes:
        raise ValueError(
            f"{path}: expected a list of {num_classes} class names (the "
            f"model's num_classes); got {names!r:.200}.")
    return [str(n) for n in names]


def image_files(spec):
    """Image files of a directory, a glob pattern or a file list."""
    if isinstance(spec, (list, tuple)):
        files = [f for s in spec for f in image_files(s)]
    elif os.path.isdir(spec):
        files = sorted(os.path.join(spec, f) for f in os.listdir(spec)
                       if f.lower().endswith(IMAGE_EXTENSIONS))
    elif os.path.isfile(spec):
        files = [spec]
    else:
        files = sorted(f for f in glob.glob(spec, recursive=True)
                       if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise FileNotFoundError(f"no images (.jpg, .png, .bmp, .gif, .webp) "
                                f"found at {spec!r}.")
    return files


def calibration_dataset(images, input_size, limit=MAX_CALIBRATION_IMAGES):
    """`representative_dataset` for int8: the user's images, letterboxed
    to `input_size` as the serving signatures do.

    Args:
        images: a directory, glob, file list, or an array `(N, H, W, 3)` in
            [0, 1].
    """
    import numpy as np
    import tensorflow as tf

    from serving.letterbox import letterbox

    def generate():
        if isinstance(images, np.ndarray):
            for image in images[:limit]:
                yield {"images": letterbox(tf.constant(image, tf.float32),
                                           input_size)[0][None].numpy()}
            return
        for path in image_files(images)[:limit]:
            data = tf.io.read_file(path)
            image = tf.io.decode_image(data, channels=3,
                                       expand_animations=False)
            image = tf.cast(image, tf.float32) / 255.0
            yield {"images": letterbox(image, input_size)[0][None].numpy()}

    return generate


def export_saved_model(module, path):
    """Writes a `serving.signatures.DetectorModule` as a SavedModel with its
    `serving_default` and `serving_tensor` signatures; returns `path`."""
    import tensorflow as tf

    if os.path.exists(path):
        shutil.rmtree(path)
    tf.saved_model.save(module, path, signatures={
        SIGNATURE: module.serving_default,
        TENSOR_SIGNATURE: module.serving_tensor})
    return path


def export_tflite(module, path, precision="fp32", calibration=None):
    """Converts the module's batch-1 function to TFLite; built-in ops only.

    Args:
        precision: "fp32", "fp16" (float16 weights) or "int8" (full-integer
            network, calibrated on `calibration`; decoding and NMS float).
        calibration: a `representative_dataset` generator function (int8).

    Returns `path`. Converted from a SavedModel: converting Keras-backed
    concrete functions directly gave uninitialized weights in TF 2.21.
    """
    import keras
    import tensorflow as tf

    if precision not in TFLITE_PRECISIONS:
        raise ValueError(f"precision must be one of {TFLITE_PRECISIONS}; "
                         f"got {precision!r}.")
    if precision == "int8" and calibration is None:
        raise ValueError("int8 TFLite needs calibration images "
                         "(--calibration-images DIR_OR_GLOB).")
    with tempfile.TemporaryDirectory() as tmp:
        # Through Keras' ExportArchive: from a plain tf.Module holding the
        # Keras model, the converter kept the weights as uninitialized
        # resource variables (VAR_HANDLE) instead of freezing them.
        archive = keras.export.ExportArchive()
        archive.track(module.detector)
        archive.add_endpoint(SIGNATURE, module.tflite_fn.python_function,
                             input_signature=module.tflite_fn.input_signature)
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            tmp, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS]
        if precision == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        if precision == "int8":
            flatbuffer = _convert_int8(converter, calibration)
        else:
            flatbuffer = converter.convert()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    check_builtin_ops(path)
    return path


def _convert_int8(converter, calibration, float_scopes=None):
    """Full-integer network, float decoding and NMS.

    The decoding multiplies sigmoid outputs by anchors and strides and adds
    grid offsets: one int8 scale for boxes spanning 0..S pixels costs whole
    pixels, and the objectness x class products feed the score threshold.
    The ops whose output tensors are named under `float_scopes` (default
    `INT8_FLOAT_SCOPES`: the decode and NMS layers) are kept float with
    TFLite's selective quantization (`QuantizationDebugger` denylist).
    """
    import tensorflow as tf

    scopes = INT8_FLOAT_SCOPES if float_scopes is None else float_scopes
    nodes = float_nodes(converter, scopes) if scopes else []
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    if not nodes:
        return converter.convert()
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=calibration,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=nodes))
    return debugger.get_nondebug_quantized_model()


def float_nodes(converter, scopes):
    """Output tensor names of `converter`'s (float) conversion whose name
    contains one of `scopes` (Keras layer names appear in them)."""
    from ai_edge_litert.interpreter import Interpreter

    flatbuffer = converter.convert()  # still a float converter
    interpreter = Interpreter(model_content=flatbuffer)
    names = set()
    for op in interpreter._get_ops_details():  # noqa: SLF001 - no public op list
        for index in op["outputs"]:
            name = interpreter._get_tensor_details(index, 0)["name"]  # noqa
            if any(scope in name for scope in scopes):
                names.add(name)
    return sorted(names)


def tflite_ops(path):
    """Sorted op names of a TFLite file over all its subgraphs (the NMS
    sits in a WHILE body), e.g. `CONV_2D`, `NON_MAX_SUPPRESSION_V4`; a
    Flex or custom op appears under its own name (`FlexXxx`)."""
    import contextlib
    import io
    import re

    import tensorflow as tf

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_path=path)
    return sorted(set(re.findall(r"Op#\d+ (\w+)\(", text.getvalue())))


def check_builtin_ops(path):
    """Raises if the TFLite file needs Flex (SELECT_TF_OPS) or custom ops;
    returns its op list."""
    ops = tflite_ops(path)
    bad = [op for op in ops if not op.isupper()
           or op in ("CUSTOM", "DELEGATE")]
    if bad:
        raise ValueError(f"{path}: ops outside TFLite's builtins: {bad}.")
    return ops


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


def export_detector(detector, out, class_names, bounding_box_format="xyxy",
                    tflite=(), calibration_images=None, model_config=None,
                    extra=None):
    """Writes `out/saved_model/`, `out/model_<precision>.tflite` for each of
    `tflite` and `out/export.json`; returns the `export.json` dict.

    Args:
        detector: Keras model images `(B, S_h, S_w, 3)` -> detections (e.g.
            `serving.build_detector`), boxes in `bounding_box_format`.
        class_names: C names, in class order.
        tflite: any of "fp32", "fp16", "int8".
        calibration_images: int8 calibration (directory, glob, file list or
            `(N, H, W, 3)` array in [0, 1]).
        model_config: JSON-able dict saved as the `model_config.json` asset.
        extra: more entries for `export.json` (thresholds, model path...).
    """
    from serving.signatures import OUTPUT_KEYS, DetectorModule

    unknown = set(tflite) - set(TFLITE_PRECISIONS)
    if unknown:
        raise ValueError(f"--tflite takes {TFLITE_PRECISIONS}; got "
                         f"{sorted(unknown)}.")
    os.makedirs(out, exist_ok=True)
    report = {"input_size": list(detector.input_shape[1:3]),
              "class_names": list(class_names),
              "signatures": {
                  SIGNATURE: {"images": "string (B,) encoded images"},
                  TENSOR_SIGNATURE: {"images": "float32 (B, H, W, 3) in "
                                               "[0, 1]"}},
              "outputs": list(OUTPUT_KEYS),
              "boxes": "xyxy pixels of each original image, clipped",
              **(extra or {})}
    with tempfile.TemporaryDirectory() as tmp:
        names_path = os.path.join(tmp, "class_names.txt")
        with open(names_path, "w") as f:
            f.write("\n".join(class_names) + "\n")
        config_path = os.path.join(tmp, "model_config.json")
        with open(config_path, "w") as f:
            json.dump({**(model_config or {}), "class_names": class_names,
                       **(extra or {})}, f, indent=2, default=str)
        module = DetectorModule(detector, class_names, bounding_box_format,
                                assets=(names_path, config_path))
        start = time.perf_counter()
        path = export_saved_model(module, os.path.join(out, "saved_model"))
    report["saved_model"] = {
        "path": path, "bytes": _size(path), "ops": check_core_ops(path),
        "seconds": round(time.perf_counter() - start, 2)}
    _logger.info("SavedModel %s: %.1f MB, %d op types, core TF only", path,
                 report["saved_model"]["bytes"] / 1e6,
                 len(report["saved_model"]["ops"]))
    report["tflite"] = {}
    for precision in tflite:
        start = time.perf_counter()
        calibration = None
        if precision == "int8":
            if calibration_images is None:
                raise ValueError("--tflite int8 needs --calibration-images "
                                 "DIR_OR_GLOB (images like those served).")
            calibration = calibration_dataset(calibration_images,
                                              module.input_size)
        path = export_tflite(module, os.path.join(
            out, f"model_{precision}.tflite"), precision, calibration)
        report["tflite"][precision] = {
            "path": path, "bytes": _size(path), "ops": tflite_ops(path),
            "input": f"float32 (1, {module.input_size[0]}, "
                     f"{module.input_size[1]}, 3) letterboxed, in [0, 1]",
            "boxes": "xyxy pixels of the input image, clipped",
            "seconds": round(time.perf_counter() - start, 2)}
        _logger.info("TFLite %s %s: %.2f MB, builtin ops only", precision,
                     path, report["tflite"][precision]["bytes"] / 1e6)
    with open(os.path.join(out, "export.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    return report


def export(model_path, out, decode_path=None, class_names_path=None,
           conf=0.25, iou=0.45, max_det=300, agnostic=False, nms="iou",
           tflite=(), calibration_images=None):
    """Loads a `.keras` network and its decode configuration
    (`<model>.decode.json`), builds network + decode + NMS with these
    thresholds and writes the export (`export_detector`). Returns the
    `export.json` dict."""
    import keras

    from serving.detector import (build_detector, decode_config_path,
                                  load_decode_config)

    start = time.perf_counter()
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"--model {model_path!r} does not exist.")
    model = keras.saving.load_model(model_path, compile=False)
    config = load_decode_config(decode_path or decode_config_path(model_path))
    class_names = load_class_names(int(config["num_classes"]),
                                   class_names_path, model_path)
    thresholds = {"conf_thres": conf, "iou_thres": iou, "max_det": max_det,
                  "agnostic": agnostic, "method": nms}
    detector = build_detector(model, config, "xyxy", **thresholds)
    return export_detector(
        detector, out, class_names, "xyxy", tflite, calibration_images,
        model_config={"decode": config,
                      "keras": json.loads(model.to_json())},
        extra={"model": os.path.abspath(model_path), "nms": thresholds,
               "decode": config,
               "load_seconds": round(time.perf_counter() - start, 2)})


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export", help="export a .keras detector to SavedModel and TFLite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="the trained .keras model (raw head outputs)")
    parser.add_argument("--decode", help="decode configuration JSON "
                        "(default: <model>.decode.json)")
    parser.add_argument("--class-names", help="JSON list or text file, one "
                        "name a line (default: class_names.json beside the "
                        "model, else class_0 ...)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--conf", type=float, default=0.25,
                        help="score threshold (default 0.25)")
    parser.add_argument("--iou", type=float, default=0.45,
                        help="NMS IoU threshold (default 0.45)")
    parser.add_argument("--max-det", type=int, default=300,
                        help="detections per image (default 300)")
    parser.add_argument("--agnostic", action="store_true",
                        help="one NMS over all classes")
    parser.add_argument("--nms", choices=["iou", "diou"], default="iou",
                        help="suppression rule (diou: YOLOv4's DIoU-NMS)")
    parser.add_argument("--tflite", nargs="*", default=[],
                        choices=list(TFLITE_PRECISIONS),
                        help="also write model_<precision>.tflite")
    parser.add_argument("--calibration-images", metavar="DIR_OR_GLOB",
                        help="images for int8 calibration")
    parser.set_defaults(func=run)
    return parser


def run(args):
    from serving.logs import setup_logging

    setup_logging()
    try:
        report = export(args.model, args.out, args.decode, args.class_names,
                        args.conf, args.iou, args.max_det, args.agnostic,
                        args.nms, tuple(args.tflite),
                        args.calibration_images)
    except (ValueError, FileNotFoundError) as error:
        print(f"export: error: {error}")
        return 2
    summary = {"saved_model": report["saved_model"]["path"],
               **{f"tflite_{k}": v["path"]
                  for k, v in report["tflite"].items()},
               "export.json": os.path.join(args.out, "export.json")}
    print(json.dumps(summary, indent=2))
    return 0
