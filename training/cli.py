"""`python -m training train`, `evaluate` and `show-data`.

    python -m training train --version v5 --data shapes --epochs 30 --out runs/shapes
    python -m training train --version v3 --data coco --train-json a.json \
        --train-images-dir imgs/ --val-json b.json --val-images-dir imgs/
    python -m training train --data coco128/coco128.yaml --image-size 640
    python -m training train --data instances.json --images-dir images/
    python -m training evaluate --run runs/shapes          # mAP of model.keras
    python -m training show-data --data coco128.yaml --split val --out g.png

Training writes a run directory (config.json, class_names.json,
history.jsonl, metrics.json,
model.keras + model.decode.json, best.weights.h5, backup/ while running);
running the same command again after an interruption resumes from the last
backup.
"""

import argparse
import logging
import json
import os

SHAPES_MAX_BOXES = 20


def _dataset(args, split, augment_options=None, shard=None):
    """(unbatched dataset, num_classes) of `--data` for `split`; the
    dataset's `class_names` lists the classes. `augment_options`: keywords
    of `keras_yolo.data.augment.training_pipeline` (with --augment);
    `shard`: `(num_workers, index)` of a multi-worker run's training split
    (file sources: each worker reads its own files)."""
    from keras_yolo import data

    if args.data == "shapes":
        count = args.train_images if split == "train" else args.val_images
        seed = args.seed if split == "train" else args.seed + 1000
        ds = data.shapes(num_images=count, image_size=args.image_size,
                         num_classes=args.num_classes, seed=seed,
                         max_boxes=args.max_boxes or SHAPES_MAX_BOXES)
        ds.class_names = list(data.CLASS_NAMES[:args.num_classes])
        return ds, args.num_classes
    source, images_dir, data_split = _source_of(args, split)
    if source is None:
        return None, None
    training = split == "train"
    ds = data.load(
        source, split=data_split, image_size=args.image_size,
        augment=training and bool(getattr(args, "augment", False)),
        max_boxes=args.max_boxes, images_dir=images_dir,
        format=getattr(args, "format", None),
        on_error=getattr(args, "on_error", "raise"), seed=args.seed,
        cache=getattr(args, "cache", None), shuffle=training,
        augment_options=augment_options,
        # Validation keeps crowd / difficult regions: mAP ignores them.
        return_ignored=not training, shard=shard if training else None)
    return ds, len(ds.class_names)


def _split_hyperparameters(values, loss_names=()):
    """`--hyp` KEY=VALUE pairs or YAML files -> `(augmentation, loss)`
    hyperparameters. Loss keys are the version's (`loss_names`, e.g. v5's
    ultralytics names box, obj, cls, anchor_t, ...; v1-v4 the loss's own
    lambda_coord, ignore_thresh, ...), with their unscaled meaning; a YAML's
    other keys (lr0, ...) are left to their own flags."""
    import logging

    from keras_yolo.data.augment import DEFAULT_HYPERPARAMETERS

    augment, loss = {}, {}
    for value in values or ():
        if "=" in value:
            key, _, text = value.partition("=")
            if key not in DEFAULT_HYPERPARAMETERS and key not in loss_names:
                raise SystemExit(
                    f"--hyp {value}: unknown key {key!r}; known: augmentation "
                    f"{sorted(DEFAULT_HYPERPARAMETERS)}, loss "
                    f"{sorted(loss_names)}")
            target = augment if key in DEFAULT_HYPERPARAMETERS else loss
            target[key] = _hyperparameter_value(value, key, text)
            continue
        import yaml

        with open(value) as f:
            loaded = yaml.safe_load(f) or {}
        used = {k: float(v) for k, v in loaded.items()
                if k in DEFAULT_HYPERPARAMETERS}
        losses = {k: v for k, v in loaded.items() if k in loss_names
                  and k not in DEFAULT_HYPERPARAMETERS}
        logging.getLogger("training").info(
            "--hyp %s: augmentation keys %s, loss keys %s (others ignored "
            "here: %s)", value, sorted(used), sorted(losses),
            sorted(set(loaded) - set(used) - set(losses)))
        augment.update(used)
        loss.update(losses)
    return augment, loss


def _hyperparameter_value(value, key, text):
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    try:
        return float(text)
    except ValueError:
        raise SystemExit(f"--hyp {value}: {text!r} is not a number") from None


def _hyperparameters(values, loss_names=()):
    """The augmentation part of `_split_hyperparameters`."""
    return _split_hyperparameters(values, loss_names)[0]


def _loss_names(args):
    """The `--version`'s loss hyperparameter names (none without one)."""
    version = getattr(args, "version", None)
    if version is None:
        return ()
    from keras_yolo import versions

    return versions.get(version).hyperparameter_names()


def _augment_setup(args):
    """`(augment_options, callbacks)` for `train --augment`: the mosaic
    probability is a variable that `CloseMosaic` zeroes for the last
    `--close-mosaic` epochs (ultralytics' close_mosaic)."""
    if not getattr(args, "augment", False):
        return None, []
    import tensorflow as tf

    from keras_yolo.data.augment import DEFAULT_HYPERPARAMETERS, CloseMosaic

    hyp = _hyperparameters(args.hyp, _loss_names(args))
    callbacks = []
    if args.close_mosaic and args.close_mosaic > 0:
        hyp["mosaic"] = tf.Variable(
            hyp.get("mosaic", DEFAULT_HYPERPARAMETERS["mosaic"]),
            trainable=False, dtype=tf.float32, name="mosaic")
        callbacks.append(CloseMosaic(hyp["mosaic"],
                                     max(args.epochs - args.close_mosaic, 0)))
    return {"hyperparameters": hyp}, callbacks


def _source_of(args, split):
    """`(source, images_dir, split name)` of `--data` for `split`, or
    `(None, None, None)` when it has no such split."""
    import logging

    from keras_yolo import data

    if args.data == "coco":  # the older spelling: --train-json / --val-json
        path = args.train_json if split == "train" else args.val_json
        images = args.train_images_dir if split == "train" \
            else args.val_images_dir
        return (path, images, split) if path else (None, None, None)
    if split == "train":
        return args.data, getattr(args, "images_dir", None), "train"
    if getattr(args, "val_data", None):
        return (args.val_data, getattr(args, "val_images_dir", None) or
                getattr(args, "images_dir", None),
                getattr(args, "val_split", None) or "val")
    if args.data.lower().endswith(".json"):
        return None, None, None  # a COCO JSON is one split: --val-data
    wanted = getattr(args, "val_split", None)
    splits = data.describe(args.data, format=getattr(args, "format", None)
                           )["splits"]
    if wanted:
        return args.data, None, wanted
    for name in ("val", "test"):
        if name in splits:
            if name != "val":
                logging.getLogger("training").warning(
                    "%s has no 'val' split: validating on %r.", args.data,
                    name)
            return args.data, None, name
    if not splits:  # a folder without split lists: all its images
        return args.data, None, "val"
    logging.getLogger("training").warning(
        "%s has no 'val' or 'test' split (has %s): no validation.",
        args.data, splits)
    return None, None, None


def _add_data_arguments(parser):
    """--data and how to read it (train and show-data)."""
    parser.add_argument("--data", default="shapes", help="shapes, an "
                        "ultralytics dataset YAML, a YOLO txt folder, a COCO "
                        "JSON (with --images-dir), a Pascal VOC folder, or "
                        "coco (with --train-json / --val-json)")
    parser.add_argument("--images-dir", help="the image folder of a COCO "
                        "JSON --data")
    parser.add_argument("--format", choices=["yaml", "yolo", "coco", "voc"],
                        help="force the format of a folder holding several")
    parser.add_argument("--augment", action="store_true",
                        help="training augmentations (mosaic, affine, HSV, "
                        "flips, mixup; keras_yolo.data.augment)")
    parser.add_argument("--hyp", nargs="*", default=[], metavar="KEY=VALUE",
                        help="augmentation hyperparameters with ultralytics' "
                        "names (hsv_h, degrees, mosaic, mixup, cutmix, ...) "
                        "and, for train, the loss's (v5: box, obj, cls, "
                        "anchor_t, ... unscaled, as hyp.scratch-low.yaml; "
                        "v1-v4: lambda_coord, ignore_thresh, ...), or a hyp "
                        "YAML (its augmentation and loss keys are used)")
    parser.add_argument("--cache", help="'ram' or 'disk:PATH': keep decoded "
                        "images after the first epoch")
    parser.add_argument("--on-error", default="raise",
                        choices=["raise", "skip"],
                        help="bad images or label rows: stop naming them, "
                        "or leave them out with a counted summary")


def add_train_parser(subparsers):
    parser = subparsers.add_parser(
        "train", help="train a detector; writes a run directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # Checked against the registry when the command runs (importing it
    # here would load TensorFlow for --help).
    parser.add_argument("--version", default="v5",
                        help="a registered YOLO version "
                        "(keras_yolo.versions.names(): v1 ... v5)")
    parser.add_argument("--model", help="a keras_yolo.models.build name "
                        "(e.g. yolov5s); default the version's small model")
    _add_data_arguments(parser)
    parser.add_argument("--close-mosaic", type=int, default=10,
                        help="with --augment: no mosaic in the last N epochs")
    parser.add_argument("--train-json", help="with --data coco: the "
                        "training COCO JSON (or pass it as --data)")
    parser.add_argument("--train-images-dir")
    parser.add_argument("--val-json")
    parser.add_argument("--val-images-dir")
    parser.add_argument("--val-data", help="a separate validation source "
                        "(default: the --data source's val, else test, "
                        "split)")
    parser.add_argument("--val-split", help="the validation split's name "
                        "(default val, else test)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-classes", type=int, default=3,
                        help="classes of the shapes data")
    parser.add_argument("--max-boxes", type=int, help="rows per image "
                        f"(shapes: {SHAPES_MAX_BOXES}; files: the most "
                        "boxes of any image)")
    parser.add_argument("--train-images", type=int, default=768)
    parser.add_argument("--val-images", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    # ultralytics yolov5 train.py + hyp.scratch-low.yaml (training.trainer).
    parser.add_argument("--optimizer", default="sgd",
                        choices=["sgd", "adamw", "adam"],
                        help="sgd: the yolov5 recipe (parameter groups, "
                        "coupled L2, accumulation, ModelEMA)")
    parser.add_argument("--learning-rate", type=float,
                        help="lr0 (default 0.01 for sgd, 2e-3 for adam(w))")
    parser.add_argument("--final-fraction", type=float, default=0.01,
                        help="lrf: last learning rate / lr0")
    parser.add_argument("--schedule",
                        choices=["linear", "cosine", "sgdr", "constant"],
                        help="decay after warmup (default linear for sgd, "
                        "cosine for adam(w); sgdr: sgd only)")
    parser.add_argument("--warmup-epochs", type=float,
                        help="default 3 for sgd (at least 100 steps), 1 "
                        "for adam(w)")
    parser.add_argument("--warmup-bias-lr", type=float, default=0.1)
    parser.add_argument("--warmup-momentum", type=float, default=0.8)
    parser.add_argument("--momentum", type=float, default=0.937)
    parser.add_argument("--weight-decay", type=float, default=5e-4,
                        help="sgd: coupled L2 on kernels, scaled by "
                        "batch x accumulate / 64; adam(w): decoupled")
    parser.add_argument("--nominal-batch-size", type=int, default=64,
                        help="sgd: images per optimizer step (gradient "
                        "accumulation over smaller batches)")
    parser.add_argument("--clip-norm", type=float, default=10.0,
                        help="global gradient norm limit (0: off)")
    parser.add_argument("--self-adversarial", type=float, default=0.0,
                        metavar="EPSILON",
                        help="Self-Adversarial Training (YOLOv4): step size "
                        "in image units, e.g. 0.008 (0: off)")
    parser.add_argument("--self-adversarial-probability", type=float,
                        default=0.5, help="share of batches altered first")
    parser.add_argument("--no-autoanchor", action="store_true",
                        help="v5 (versions with autoanchor): skip ultralytics' anchor check (best "
                        "possible recall < 0.98: k-means + genetic anchors)")
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
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the weights, the data order and the "
                        "augmentations: same seed, same run")
    parser.add_argument("--deterministic", action="store_true",
                        help="TF op determinism: bitwise-equal runs, at "
                        "some speed cost")
    parser.add_argument("--out", help="run directory (default "
                        "runs/train-<time>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in --out if it holds a finished "
                        "run (its files are removed first); an unfinished "
                        "run there is resumed")
    parser.set_defaults(func=run_train)
    return parser


def run_train(args):
    from keras_yolo import versions
    from serving.detector import decode_config_path, save_decode_config
    from training import recipes
    from training.run import setup_logging
    from training.trainer import train

    from training.strategy import make_strategy

    try:
        version = versions.get(args.version)
    except ValueError as error:
        raise SystemExit(f"train: error: --version: {error}") from None
    setup_logging()
    # Before any other TF op: MultiWorkerMirroredStrategy requires it.
    strategy = make_strategy(args.strategy)
    augment_options, augment_callbacks = _augment_setup(args)
    import tensorflow as tf

    from training.strategy import worker_shard

    shard = (worker_shard() if isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy) else None)
    train_ds, num_classes = _dataset(args, "train", augment_options, shard)
    val_ds, _ = _dataset(args, "val")
    args.num_classes = num_classes
    class_names = list(train_ds.class_names)
    augment_hyp, loss_hyp = _split_hyperparameters(
        args.hyp, version.hyperparameter_names())
    recipe = recipes.make_recipe(args.version, num_classes, args.image_size,
                                 model=args.model, hyperparameters=loss_hyp)
    anchor_report = None
    if version.autoanchor and not args.no_autoanchor:
        # The labels as stored (yolov5 checks dataset.labels, not mosaics).
        plain = argparse.Namespace(**{**vars(args), "augment": False})
        anchors, anchor_report = recipes.autoanchor(
            recipe.head["anchors"], _dataset(plain, "train")[0],
            args.image_size, seed=args.seed)
        logging.getLogger("training").info(
            "autoanchor: %.2f anchors/target, best possible recall %.4f%s",
            anchor_report["aat"], anchor_report["bpr"],
            f" -> {anchor_report['new_bpr']:.4f}, anchors replaced"
            if anchor_report["replaced"] else "")
        if anchor_report["replaced"]:
            recipe = recipes.make_recipe(args.version, num_classes,
                                         args.image_size, model=args.model,
                                         anchors=anchors,
                                         hyperparameters=loss_hyp)
    ema_momentum = args.ema_momentum if args.ema_momentum == "auto" \
        else float(args.ema_momentum)
    if args.learning_rate is None:
        args.learning_rate = 0.01 if args.optimizer == "sgd" else 2e-3
    backup = args.backup_every if args.backup_every == "epoch" \
        else int(args.backup_every)
    result = train(
        recipe.build_model, recipe.build_loss, train_ds, val_data=val_ds,
        epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, learning_rate=args.learning_rate,
        schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        final_fraction=args.final_fraction, momentum=args.momentum,
        weight_decay=args.weight_decay, warmup_bias_lr=args.warmup_bias_lr,
        warmup_momentum=args.warmup_momentum,
        nominal_batch_size=args.nominal_batch_size,
        clip_norm=args.clip_norm or None,
        self_adversarial=args.self_adversarial,
        self_adversarial_probability=args.self_adversarial_probability,
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
        config={"args": vars(args) | {"func": None},
                "hyperparameters": {**augment_hyp, **loss_hyp},
                "autoanchor": anchor_report,
                "class_names": class_names},
        shuffle=args.data == "shapes",  # load() shuffles file indices
        overwrite=args.overwrite, deterministic=args.deterministic,
        extra_callbacks=augment_callbacks)
    with open(os.path.join(result.run_dir, "class_names.json"), "w") as f:
        json.dump(class_names, f)
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
    parser.add_argument("--data", help="shapes, coco (with --val-json) or "
                        "a dataset source as for train; default: the run's, "
                        "else shapes")
    parser.add_argument("--val-json")
    parser.add_argument("--val-images-dir")
    parser.add_argument("--image-size", type=int,
                        help="default: the run's, else the model's input")
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--max-boxes", type=int)
    parser.add_argument("--val-images", type=int)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--conf-thres", type=float, help="default: the "
                        "version's evaluation NMS (v1-v5 0.001)")
    parser.add_argument("--iou-thres", type=float, help="default: the "
                        "version's evaluation NMS (v1-v5 0.6, v8 0.7)")
    parser.add_argument("--out", help="write the metrics JSON here "
                        "(default <run>/evaluate.json)")
    parser.set_defaults(func=run_evaluate)
    return parser


# Settings `evaluate --run` takes from the run unless given explicitly, and
# their values when neither gives one.
EVALUATE_DEFAULTS = {"data": "shapes", "image_size": None, "num_classes": 3,
                     "max_boxes": None, "val_images": 128, "seed": 0,
                     "val_json": None, "val_images_dir": None,
                     "images_dir": None, "format": None, "val_data": None,
                     "val_split": None}


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

    from keras_yolo import metrics, versions
    from keras_yolo.layers import NonMaxSuppression
    from serving.detector import decode_config_path, load_decode_config
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
    decode = versions.decode_layer(decode_config, fmt)
    eval_nms = versions.get(decode_config["version"]).eval_nms
    nms = NonMaxSuppression(
        bounding_box_format=fmt, max_det=300,
        conf_thres=eval_nms["conf_thres"] if args.conf_thres is None
        else args.conf_thres,
        iou_thres=eval_nms["iou_thres"] if args.iou_thres is None
        else args.iou_thres)
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


def add_show_data_parser(subparsers):
    parser = subparsers.add_parser(
        "show-data", help="save a PNG grid of a dataset's images with their "
        "labelled boxes (as training sees them)",
        description="python -m training show-data --data coco128.yaml "
        "--split val --augment --out grid.png")
    _add_data_arguments(parser)
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--num-images", type=int, default=16,
                        help="images in the grid")
    parser.add_argument("--num-classes", type=int, default=3,
                        help="classes of the shapes data")
    parser.add_argument("--shuffle", action="store_true",
                        help="a random draw instead of the first images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="grid.png", help="the PNG to write")
    parser.set_defaults(func=run_show_data)
    return parser


def run_show_data(args):
    from keras_yolo import data
    from training.run import setup_logging

    setup_logging()
    fmt = "rel_center_xywh"
    ds = data.load(args.data, split=args.split, image_size=args.image_size,
                   augment=args.augment, bounding_box_format=fmt,
                   images_dir=args.images_dir, format=args.format,
                   on_error=args.on_error, seed=args.seed, cache=args.cache,
                   shuffle=args.shuffle, num_images=max(args.num_images, 1),
                   num_classes=args.num_classes,
                   augment_options={"hyperparameters":
                                    _hyperparameters(args.hyp)}
                   if args.augment else None)
    images, y_true = next(iter(ds.batch(args.num_images)))
    data.plot_batch(images, y_true, ds.class_names, fmt, args.out)
    print(json.dumps({"out": args.out, "images": int(images.shape[0]),
                      "boxes": int((y_true["labels"] >= 0).numpy().sum()),
                      "image_size": args.image_size,
                      "num_classes": len(ds.class_names)}, indent=2))
    return 0
