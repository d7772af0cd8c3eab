"""`python -m training demo`: the whole pipeline on the synthetic shapes set.

    python -m training demo --out runs/demo    # about 6 minutes on 2 CPU cores

1. generates the shapes dataset (training and held-out validation images);
2. measures the untrained model's COCO mAP (the baseline);
3. trains a small detector (YOLOv5 objective by default; `--version` any
   registered one, v1..v5) with warmup + cosine, EMA and resumable backups,
   for `--epochs` or `--minutes` of training, whichever ends first (the cosine schedule is
   shortened to end within the time budget on a slower machine);
4. evaluates COCO mAP@0.5 and mAP@0.5:0.95 on the validation images;
5. exports a TF Serving SavedModel (decode + NMS inside, core TF ops only)
   and a TFLite file, and checks the TFLite output against Keras;
6. writes everything to the run directory and prints a summary
   (`summary.json` holds the same numbers).
"""

import argparse
import json
import logging
import os
import time

_logger = logging.getLogger("training")

# Demo defaults: small images keep a CPU run to minutes; `minutes` bounds
# the training time whatever the machine (see TimeBudget).
DEFAULTS = dict(version="v5", image_size=128, num_classes=3,
                train_images=1024, val_images=128, epochs=20, batch_size=32,
                minutes=4.0, optimizer="adamw", learning_rate=2e-3,
                warmup_epochs=1.0, seed=0)


def run_demo(out=None, version="v5", image_size=128, num_classes=3,
             train_images=1024, val_images=128, epochs=20, batch_size=32,
             minutes=4.0, optimizer="adamw", learning_rate=2e-3,
             warmup_epochs=1.0, seed=0, strategy="auto", jit_compile="auto",
             export=True, overwrite=False):
    """Runs the demo (see the module docstring); returns the summary dict."""
    import tensorflow as tf

    import serving
    from keras_yolo import data, metrics
    from serving.detector import decode_config_path, save_decode_config
    from training import recipes
    from training import run as run_lib
    from training.trainer import batch_dataset, train

    run_lib.setup_logging()
    run_dir = run_lib.make_run_dir(out, prefix="demo")
    start = time.perf_counter()
    timings = {}

    t = time.perf_counter()
    train_ds = data.shapes(num_images=train_images, image_size=image_size,
                           num_classes=num_classes, seed=seed).cache()
    val_ds = data.shapes(num_images=val_images, image_size=image_size,
                         num_classes=num_classes, seed=seed + 1000).cache()
    timings["data_seconds"] = round(time.perf_counter() - t, 2)
    _logger.info("shapes: %d training + %d validation images of %d px, %d "
                 "classes (%.1f s)", train_images, val_images, image_size,
                 num_classes, timings["data_seconds"])

    if jit_compile == "auto" and not tf.config.list_physical_devices("GPU"):
        # On CPU, XLA's compile of the YOLOv5 train step takes minutes and
        # its steps are no faster: not worth it in a few-minute run.
        jit_compile = False
    recipe = recipes.make_recipe(version, num_classes, image_size)
    postprocess = recipe.postprocess()
    val_batches = batch_dataset(val_ds, batch_size, shuffle=False,
                                drop_remainder=False)

    t = time.perf_counter()
    untrained = recipe.build_model()
    detect = tf.function(lambda x: postprocess(untrained(x, training=False)))
    baseline = metrics.evaluate(detect, val_batches,
                                recipe.bounding_box_format, num_classes)
    timings["baseline_eval_seconds"] = round(time.perf_counter() - t, 2)
    _logger.info("untrained %s: mAP@0.5 %.4f", version, baseline["map50"])
    del untrained

    config = {"demo": dict(version=version, image_size=image_size,
                           num_classes=num_classes,
                           train_images=train_images, val_images=val_images,
                           minutes=minutes)}
    result = train(recipe.build_model, recipe.build_loss, train_ds,
                   val_data=val_ds, epochs=epochs, batch_size=batch_size,
                   optimizer=optimizer, learning_rate=learning_rate,
                   warmup_epochs=warmup_epochs, strategy=strategy,
                   jit_compile=jit_compile, run_dir=run_dir,
                   postprocess=postprocess,
                   bounding_box_format=recipe.bounding_box_format,
                   num_classes=num_classes, eval_every=max(epochs // 4, 1),
                   seed=seed, time_budget=minutes * 60, config=config,
                   overwrite=overwrite)
    trained = result.metrics
    model_path = os.path.join(run_dir, "model.keras")
    save_decode_config(recipe.decode_config, decode_config_path(model_path))

    summary = {
        "run_dir": run_dir, "version": version,
        "model": result.model.name,
        "parameters": trained["parameters"],
        "epochs": trained["epochs_completed"],
        "train_seconds": trained["train_seconds"],
        "images_per_second": trained["images_per_second"],
        "strategy": trained["strategy"],
        "jit_compile": trained["jit_compile"],
        "untrained": {"map50": baseline["map50"], "map": baseline["map"]},
        "trained": {k: trained[k] for k in ("map50", "map", "map75",
                                             "per_class_map50")},
        **timings,
    }
    if export:
        from keras_yolo.data.shapes import CLASS_NAMES
        from serving.export import export_detector, load_class_names

        detector = serving.build_detector(
            result.model, recipe.decode_layer("xyxy"), "xyxy")
        names = (load_class_names(num_classes, model_path=model_path)
                 if os.path.exists(os.path.join(run_dir, "class_names.json"))
                 else list(CLASS_NAMES[:num_classes]))
        report = export_detector(detector, os.path.join(run_dir, "export"),
                                 names, "xyxy", tflite=("fp32",),
                                 extra={"decode": recipe.decode_config})
        # Validation images have the model's size: the letterbox is the
        # identity, so the TFLite input is the image itself.
        images = next(iter(val_batches))[0][:8].numpy()
        difference, compared = _tflite_difference(
            detector, report["tflite"]["fp32"]["path"], images)
        summary["export"] = {
            "saved_model_mb": round(report["saved_model"]["bytes"] / 1e6, 2),
            "tflite_mb": round(report["tflite"]["fp32"]["bytes"] / 1e6, 2),
            "op_types": len(report["saved_model"]["ops"]),
            "core_tf_ops_only": True,
            "tflite_max_abs_diff": difference,
            "tflite_detections_compared": compared,
            "seconds": round(report["saved_model"]["seconds"]
                             + report["tflite"]["fp32"]["seconds"], 2),
        }
    summary["total_seconds"] = round(time.perf_counter() - start, 2)
    run_lib.write_json(os.path.join(run_dir, "summary.json"), summary)
    print(format_summary(summary))
    return summary


def _tflite_difference(detector, path, images):
    """Largest |TFLite - Keras| over boxes and scores of `images` (and -1
    if the detection counts or classes differ)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner(
        "serving_default")
    worst, compared = 0.0, 0
    for image in images:
        got = runner(images=image[None].astype(np.float32))
        want = {k: np.asarray(v) for k, v in detector(image[None]).items()}
        # The TFLite model clips its boxes to the image (padding stays -1).
        size = np.array([image.shape[1], image.shape[0]] * 2, np.float32)
        want["boxes"] = np.where(want["boxes"] == -1, -1,
                                 np.clip(want["boxes"], 0, size))
        if (got["num_detections"] != want["num_detections"]).any() or (
                got["classes"] != want["classes"]).any():
            return -1.0, compared
        compared += int(want["num_detections"].sum())
        for key in ("boxes", "scores"):
            worst = max(worst, float(np.abs(got[key] - want[key]).max()))
    return worst, compared


def format_summary(s):
    lines = [
        f"keras-yolo demo ({s['version']}, {s['model']}, "
        f"{s['parameters']:,} parameters) -> {s['run_dir']}",
        f"  trained {s['epochs']} epochs in {s['train_seconds']:.0f} s "
        f"({s['images_per_second']:.0f} images/s, {s['strategy']}, "
        f"XLA {s['jit_compile']})",
        f"  mAP@0.5       untrained {s['untrained']['map50']:.4f} -> "
        f"trained {s['trained']['map50']:.4f}",
        f"  mAP@0.5:0.95  untrained {s['untrained']['map']:.4f} -> "
        f"trained {s['trained']['map']:.4f}",
    ]
    if "export" in s:
        e = s["export"]
        lines.append(
            f"  export: SavedModel {e['saved_model_mb']} MB ("
            f"{e['op_types']} op types, core TF only), TFLite ("
            f"{e['tflite_mb']} MB, max |TFLite - Keras| "
            f"{e['tflite_max_abs_diff']:.2e} over "
            f"{e['tflite_detections_compared']} detections of 8 images)")
    lines.append(f"  total {s['total_seconds']:.0f} s; summary.json, "
                 "metrics.json, history.jsonl, model.keras, export/")
    if "export" in s:
        lines.append(f"  next: python -m serving predict --export "
                     f"{s['run_dir']}/export --images <image files>")
    return "\n".join(lines)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo", help="shapes dataset -> train -> mAP -> SavedModel + TFLite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="run directory (default "
                        "runs/demo-<time>)")
    # Checked against the registry when the command runs (importing it
    # here would load TensorFlow for --help).
    parser.add_argument("--version", default=DEFAULTS["version"],
                        help="a registered YOLO version "
                        "(keras_yolo.versions.names(): v1 ... v5)")
    for key in ("image_size", "num_classes", "train_images", "val_images",
                "epochs", "batch_size", "seed"):
        parser.add_argument("--" + key.replace("_", "-"), type=int,
                            default=DEFAULTS[key])
    for key in ("minutes", "learning_rate", "warmup_epochs"):
        parser.add_argument("--" + key.replace("_", "-"), type=float,
                            default=DEFAULTS[key])
    parser.add_argument("--optimizer", default=DEFAULTS["optimizer"],
                        choices=["sgd", "adamw", "adam"])
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--jit-compile", default="auto",
                        choices=["auto", "true", "false"],
                        help="auto: XLA on GPUs, off on CPU (its compile "
                        "takes minutes there)")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run)
    return parser


def run(args):
    from keras_yolo import versions

    try:
        versions.get(args.version)
    except ValueError as error:
        raise SystemExit(f"demo: error: --version: {error}") from None
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    run_demo(args.out, args.version, args.image_size, args.num_classes,
             args.train_images, args.val_images, args.epochs,
             args.batch_size, args.minutes, args.optimizer,
             args.learning_rate, args.warmup_epochs, args.seed,
             args.strategy, jit, not args.no_export, args.overwrite)
    return 0


if __name__ == "__main__":
    import sys

    from training.__main__ import main

    sys.exit(main(["demo", *sys.argv[1:]]))
