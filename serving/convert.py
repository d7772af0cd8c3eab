"""`python -m serving convert`: a darknet, yolov5 or yolov8 file to a `.keras` model.

    python -m serving convert --from darknet --cfg yolov3.cfg --weights yolov3.weights --out yolov3.keras
    python -m serving convert --from yolov5 --checkpoint yolov5s.pt --out yolov5s.keras [--npz yolov5s.npz]
    python -m serving convert --from yolov8 --checkpoint yolov8n.pt --out yolov8n.keras
    python -m serving convert ... --out m.keras --export exported/   # + SavedModel and TFLite

Writes the model (raw head outputs, keras-yolo's layout) to `--out` and its
decode configuration (the decode layer's config: version, anchors in pixels, strides, classes,
scale_x_y, ...) to `<out without .keras>.decode.json`, then reloads the
`.keras` file and checks it reproduces the converted model on a random image.
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def add_parser(subparsers):
    """Registers the `convert` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "convert", help="convert darknet .cfg/.weights or a yolov5 / yolov8 checkpoint to .keras",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, choices=("darknet", "yolov5", "yolov8"),
                        help="format of the input files")
    parser.add_argument("--cfg", help="darknet .cfg (with --from darknet)")
    parser.add_argument("--weights", help="darknet .weights (with --from darknet)")
    parser.add_argument("--flavor", default="auto", choices=("auto", "pjreddie", "alexeyab"),
                        help="darknet implementation the weights come from (batch-norm epsilon, "
                             "reorg order); auto: AlexeyAB when the cfg uses its features")
    parser.add_argument("--checkpoint", help="yolov5 / yolov8 .pt or .npz (with --from yolov5 / yolov8)")
    parser.add_argument("--npz", help="also write the checkpoint's state dict here (loads without torch)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="input size of the Keras model (default: the cfg's, or 640 640)")
    parser.add_argument("--out", required=True, help="output .keras file")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip reloading the .keras file and comparing outputs")
    parser.add_argument("--export", metavar="DIR",
                        help="then export the detector (network + decode + NMS) to DIR, "
                             "as `python -m serving export` does")
    parser.add_argument("--export-tflite", nargs="*", default=["fp32"],
                        choices=["fp32", "fp16"],
                        help="TFLite files written with --export besides the SavedModel "
                             "(int8 needs calibration images: use `python -m serving export`)")
    parser.set_defaults(func=run)
    return parser


def _log(message):
    print(f"[convert {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _fail(parser_message):
    print(f"convert: error: {parser_message}", file=sys.stderr)
    return 2


def convert(source, out, *, cfg=None, weights=None, flavor="auto", checkpoint=None, npz=None,
            input_size=None, verify=True, log=_log):
    """Python form of the command; returns `(model, decode_config_path, max_difference)`."""
    import keras

    from keras_yolo import versions

    if not out.endswith(".keras"):
        raise ValueError(f"out={out!r} must end with .keras")
    if source == "darknet":
        from keras_yolo.weights import load_darknet

        if not cfg or not weights:
            raise ValueError("--from darknet needs --cfg and --weights")
        log(f"darknet {cfg} + {weights} (flavor {flavor})")
        input_shape = None
        if input_size:
            from keras_yolo.weights.darknet import parse_cfg

            channels = int(parse_cfg(cfg)[0].get("channels", 3))
            input_shape = (*input_size, channels)
        model = load_darknet(cfg, weights, input_shape=input_shape, flavor=flavor)
        log(f"header {model.darknet_header}, flavor {model.decode_config['flavor']}")
    elif source == "yolov5":
        from keras_yolo.weights import export_yolov5_npz, load_yolov5

        if not checkpoint:
            raise ValueError("--from yolov5 needs --checkpoint")
        if npz:
            export_yolov5_npz(checkpoint, npz)
            log(f"state dict written to {npz}")
        input_shape = (*(input_size or (640, 640)), 3)
        log(f"yolov5 {checkpoint} at {input_shape}")
        model = load_yolov5(npz or checkpoint, input_shape=input_shape)
    elif source == "yolov8":
        from keras_yolo.weights import export_yolov5_npz, load_yolov8

        if not checkpoint:
            raise ValueError("--from yolov8 needs --checkpoint")
        if npz:
            export_yolov5_npz(checkpoint, npz)   # any state dict
            log(f"state dict written to {npz}")
        input_shape = (*(input_size or (640, 640)), 3)
        log(f"yolov8 {checkpoint} at {input_shape}")
        model = load_yolov8(npz or checkpoint, input_shape=input_shape)
    else:
        raise ValueError(f"source={source!r} must be 'darknet', 'yolov5' or 'yolov8'")
    # decode.json is the decode layer's own config (keras_yolo.versions);
    # the importer's description of the source stays with it.
    config = versions.decode_config(
        versions.decode_layer(model.decode_config), model.decode_config["version"],
        model.decode_config["input_shape"], model.decode_config["num_classes"])
    config["importer"] = dict(model.decode_config)
    log(f"{model.name}: {model.count_params():,} parameters, {config['version']}, "
        f"{config['num_classes']} classes, outputs {[tuple(o.shape) for o in model.outputs]}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    model.save(out)
    config_path = out[: -len(".keras")] + ".decode.json"
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    log(f"wrote {out} and {config_path}")
    difference = None
    if verify:
        shape = model.input_shape[1:]
        images = np.random.default_rng(0).uniform(0, 1, (1, *shape)).astype("float32")
        restored = keras.saving.load_model(out)
        before = keras.tree.flatten(model(images))
        after = keras.tree.flatten(restored(images))
        difference = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                         for a, b in zip(before, after))
        log(f"reloaded {out}: max |difference| {difference:.3g}")
        if difference > 0:
            raise RuntimeError(f"{out} does not reproduce the converted model "
                               f"(max difference {difference})")
    return model, config_path, difference


def run(args):
    try:
        convert(args.source, args.out, cfg=args.cfg, weights=args.weights, flavor=args.flavor,
                checkpoint=args.checkpoint, npz=args.npz, input_size=args.input_size,
                verify=not args.no_verify)
    except (ValueError, FileNotFoundError, NotImplementedError, ImportError) as error:
        return _fail(str(error))
    if args.export:
        from serving.export import export

        _log(f"exporting to {args.export} (SavedModel, TFLite {args.export_tflite})")
        try:
            report = export(args.out, args.export, tflite=tuple(args.export_tflite))
        except Exception as error:  # noqa: BLE001 - the converted files stay valid
            return _fail(f"{args.out} and its decode.json were written, but exporting them "
                         f"failed: {type(error).__name__}: {error}")
        _log("exported " + ", ".join(
            [f"saved_model: {report['saved_model']['path']}"]
            + [f"tflite {k}: {v['path']}" for k, v in report["tflite"].items()]))
    return 0
