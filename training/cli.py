"""`python -m training train` and `python -m training evaluate`.

    python -m training train --version v5 --data shapes --epochs 30 --out runs/shapes
    python -m training train --version v3 --data coco --train-json a.json \
        --train-images-dir imgs/ --val-json b.json --val-images-dir imgs/
    python -m training evaluate --run runs/shapes          # mAP of model.keras

Training writes a run directory (config.json, history.jsonl, metrics.json,
model.keras + model.decode.json, best.weights.h5, backup/ while running);
running the same command again after an interruption resumes from the last
backup.
"""

import argparse
import json
import os


def _dataset(args, split):
    """(unbatched dataset, num_classes) of `--data` for `split`."""
    from keras_yolo import data

    if args.data == "shapes":
        count = args.train_images if split == "train" else args.val_images
        seed = args.seed if split == "train" else args.seed + 1000
        ds = data.shapes(num_images=count, image_size=args.image_size,
                         num_classes=args.num_classes, seed=seed,
                         max_boxes=args.max_boxes)
        return ds, args.num_classes
    path = args.train_json if split == "train" else args.val_json
    images = args.train_images_dir if split == "train" \
        else args.val_images_dir
    if not path:
        return None, None
    images_np, gt, names = _read_coco(path, images, args)
    import numpy as np
    import tensorflow as tf

    from keras_yolo import boxes as box_ops

    rel = box_ops.convert(gt["boxes"], "xyxy", "rel_center_xywh",
                          image_shape=(args.image_size, args.image_size))
    rel = np.where(gt["labels"][..., None] >= 0, np.asarray(rel), 0.0)
    ds = tf.data.Dataset.from_tensor_slices(
        (images_np, {"boxes": rel.astype("float32"),
                     "labels": gt["labels"]}))
    return ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y)), \
        len(names)


def _read_coco(path, image_dir, args):
    """COCO JSON -> images resized to image_size and xyxy pixel boxes."""
    import numpy as np
    from PIL import Image

    from keras_yolo import data

    paths, gt, names = data.read_coco(path, args.max_boxes,
                                      image_dir=image_dir)
    size = args.image_size
    out, boxes = [], np.array(gt["boxes"], np.float32)
    for i, image_path in enumerate(paths):
        with Image.open(image_path) as image:
            image = image.convert("RGB")
            w, h = image.size
            out.append(np.asarray(image.resize((size, size))))
        boxes[i] *= [size / w, size / h, size / w, size / h]
    return np.stack(out), {"boxes": boxes, "labels": gt["labels"]}, names


def add_train_parser(subparsers):
    parser = subparsers.add_parser(
        "train", help="train a detector; writes a run directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="v5",
                        choices=["v1", "v2", "v3", "v4", "v5"])
    parser.add_argument("--model", help="a keras_yolo.models.build name "
                        "(e.g. yolov5s); default the version's small model")
    parser.add_argument("--data", default="shapes", choices=["shapes",
                                                            "coco"])
    parser.add_argument("--train-json")
    parser.add_argument("--train-images-dir")
    parser.add_argument("--val-json")
    parser.add_argument("--val-images-dir")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--max-boxes", type=int, default=20)
    parser.add_argument("--train-images", type=int, default=768)
    parser.add_argument("--val-images", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--optimizer", default="adamw",
                        choices=["sgd", "adamw", "adam"])
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--schedule", default="cosine",
                        choices=["cosine", "linear", "constant"])
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--no-ema", action="store_true")
    parser.add_argument("--ema-momentum", default="auto")
    parser.add_argument("--strategy", default="auto",
                        choices=["auto", "default", "mirrored",
                                 "multi_worker"])
    parser.add_argument("--jit-compile", default="auto",
                        choices=["auto", "true", "false"])
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--minutes", type=float,
                        help="stop after the epoch that would overrun this")
    parser.add_argument("--backup-every", default="epoch",
                        help="'epoch' or a step count between backups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="run directory (default "
                        "runs/train-<time>)")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run_train)
    return parser


def run_train(args):
    from serving.detector import decode_config_path, save_decode_config
    from training import recipes
    from training.run import setup_logging
    from training.trainer import train

    from training.strategy import make_strategy

    setup_logging()
    # Before any other TF op: MultiWorkerMirroredStrategy requires it.
    strategy = make_strategy(args.strategy)
    train_ds, num_classes = _dataset(args, "train")
    val_ds, _ = _dataset(args, "val")
    args.num_classes = num_classes
    recipe = recipes.make_recipe(args.version, num_classes, args.image_size,
                                 model=args.model)
    ema_momentum = args.ema_momentum if args.ema_momentum == "auto" \
        else float(args.ema_momentum)
    backup = args.backup_every if args.backup_every == "epoch" \
        else int(args.backup_every)
    result = train(
        recipe.build_model, recipe.build_loss, train_ds, val_data=val_ds,
        epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, learning_rate=args.learning_rate,
        schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        ema=not args.no_ema, ema_momentum=ema_momentum,
        strategy=strategy,
        jit_compile={"auto": "auto", "true": True,
                     "false": False}[args.jit_compile],
        run_dir=args.out,
        postprocess=recipe.postprocess() if val_ds is not None else None,
        bounding_box_format=recipe.bounding_box_format,
        num_classes=num_classes, eval_every=args.eval_every,
        seed=args.seed, backup_every=backup,
        time_budget=args.minutes * 60 if args.minutes else None,
        config={"args": vars(args) | {"func": None}},
        overwrite=args.overwrite)
    save_decode_config(recipe.decode_config, decode_config_path(
        os.path.join(result.run_dir, "model.keras")))
    print(json.dumps({k: result.metrics.get(k) for k in (
        "map50", "map", "epochs_completed", "train_seconds")} |
        {"run_dir": result.run_dir}, indent=2))
    return 0


def add_evaluate_parser(subparsers):
    parser = subparsers.add_parser(
        "evaluate", help="COCO mAP of a trained model on shapes or COCO "
        "JSON data", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run directory (uses model.keras "
                        "and its decode.json, and the run's data settings)")
    parser.add_argument("--model", help="a .keras model (with "
                        "<model>.decode.json)")
    # Data settings default to None: `--run` restores the run's values for
    # every one not given here, then EVALUATE_DEFAULTS fill the rest.
    parser.add_argument("--data", choices=["shapes", "coco"],
                        help="default: the run's, else shapes")
    parser.add_argument("--val-json")
    parser.add_argument("--val-images-dir")
    parser.add_argument("--image-size", type=int,
                        help="default: the run's, else the model's input")
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--max-boxes", type=int)
    parser.add_argument("--val-images", type=int)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--conf-thres", type=float, default=0.001)
    parser.add_argument("--iou-thres", type=float, default=0.6)
    parser.add_argument("--out", help="write the metrics JSON here "
                        "(default <run>/evaluate.json)")
    parser.set_defaults(func=run_evaluate)
    return parser


# Settings `evaluate --run` takes from the run unless given explicitly, and
# their values when neither gives one.
EVALUATE_DEFAULTS = {"data": "shapes", "image_size": None, "num_classes": 3,
                     "max_boxes": 20, "val_images": 128, "seed": 0,
                     "val_json": None, "val_images_dir": None}


def resolve_evaluate_args(args, saved):
    """Fills each `EVALUATE_DEFAULTS` setting of `args` that is None: from
    `saved` (a run's `config.json` "args") if it has a value, else the
    default. Explicit command-line values always win.

    Example:
        >>> args = argparse.Namespace(data=None, num_classes=None, ...)
        >>> resolve_evaluate_args(args, {"data": "coco", "num_classes": 80})
        >>> args.data, args.num_classes
        ('coco', 80)
    """
    for key, default in EVALUATE_DEFAULTS.items():
        if getattr(args, key, None) is not None:
            continue
        value = saved.get(key)
        setattr(args, key, default if value is None else value)
    return args


def run_evaluate(args):
    import keras
    import tensorflow as tf

    from keras_yolo import metrics
    from keras_yolo.postprocess import NonMaxSuppression
    from serving.detector import (decode_config_path, load_decode_config,
                                  make_decode_layer)
    from training.run import read_json, setup_logging, write_json
    from training.trainer import batch_dataset

    setup_logging()
    if not args.run and not args.model:
        print("evaluate: error: pass --run or --model")
        return 2
    model_path = args.model or os.path.join(args.run, "model.keras")
    decode_config = load_decode_config(decode_config_path(model_path))
    saved = {}
    if args.run:
        saved = (read_json(os.path.join(args.run, "config.json"), {})
                 .get("args") or {})
    resolve_evaluate_args(args, saved)
    args.image_size = args.image_size or decode_config["input_shape"][0]
    args.train_images = 0
    val_ds, num_classes = _dataset(args, "val")
    model = keras.saving.load_model(model_path, compile=False)
    fmt = "rel_center_xywh"
    decode = make_decode_layer(decode_config, fmt)
    nms = NonMaxSuppression(bounding_box_format=fmt,
                            conf_thres=args.conf_thres,
                            iou_thres=args.iou_thres, max_det=300)
    detect = tf.function(lambda x: nms(decode(model(x, training=False))))
    batches = batch_dataset(val_ds, args.batch_size, shuffle=False,
                            drop_remainder=False)
    result = metrics.evaluate(detect, batches, fmt, num_classes,
                              return_per_class=True)
    out = args.out or (os.path.join(args.run, "evaluate.json") if args.run
                       else None)
    if out:
        write_json(out, {"model": model_path, **result})
    print(json.dumps({k: result[k] for k in ("map50", "map", "map75",
                                             "num_images")}, indent=2))
    return 0
