"""`python -m serving predict`: detections of image files from an export.

    python -m serving predict --export runs/demo/export --images a.jpg photos/
        --draw runs/demo/drawn [--out detections.json] [--tflite fp32]

Sends each file's bytes, as they are, to the SavedModel's `serving_default`
signature (decode, letterbox, network, NMS and the inverse letterbox run
inside), or runs `model_<precision>.tflite` with the same letterbox around
it (`--tflite`). Boxes are `xyxy` in the original image's pixels. Writes
the detections JSON (`--out`, default `<draw>/detections.json` with
`--draw`, else stdout) and, with `--draw`, each image with its boxes and
class names.
"""

import argparse
import json
import os
import re

import numpy as np

from serving.client import detections, read_images

SIGNATURE = "serving_default"
BATCH = 8


def image_paths(specs):
    """Files and directories (their images, sorted) -> file list."""
    from serving.export import image_files

    return image_files(list(specs))


class SavedModelRunner:
    """Calls an export's `serving_default` (encoded bytes in)."""

    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        self.signature = tf.saved_model.load(path).signatures[SIGNATURE]

    def __call__(self, encoded):
        out = self.signature(images=self._tf.constant(encoded))
        return {k: v.numpy() for k, v in out.items()}


class TFLiteRunner:
    """Runs `model_<precision>.tflite` image by image: letterbox in, boxes
    mapped back to the original pixels (as the SavedModel does inside)."""

    def __init__(self, path, class_names):
        from ai_edge_litert.interpreter import Interpreter

        self.runner = Interpreter(model_path=path).get_signature_runner(
            SIGNATURE)
        shape = self.runner.get_input_details()["images"]["shape"]
        self.input_size = (int(shape[1]), int(shape[2]))
        self.class_names = np.asarray(class_names, object)

    def __call__(self, encoded):
        import tensorflow as tf

        from serving.letterbox import letterbox, unletterbox_boxes

        rows = []
        for data in encoded:
            image = tf.io.decode_image(data, channels=3,
                                       expand_animations=False)
            hw = tf.cast(tf.shape(image)[:2], tf.float32)
            canvas, scale, pad = letterbox(
                tf.cast(image, tf.float32) / 255.0, self.input_size)
            out = self.runner(images=canvas[None].numpy())
            valid = out["classes"] >= 0
            boxes = unletterbox_boxes(out["boxes"], scale, pad, hw).numpy()
            out["boxes"] = np.where(valid[..., None], boxes, -1.0)
            out["class_names"] = np.where(
                valid, self.class_names[np.maximum(out["classes"], 0)], "")
            rows.append(out)
        return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def predict(export_dir, paths, tflite=None):
    """Detections per image file: `[{"image", "width", "height",
    "detections": [{"box_xyxy", "score", "class", "name"}]}]`."""
    if tflite:
        with open(os.path.join(export_dir, "export.json")) as f:
            names = json.load(f)["class_names"]
        runner = TFLiteRunner(os.path.join(
            export_dir, f"model_{tflite}.tflite"), names)
    else:
        runner = SavedModelRunner(os.path.join(export_dir, "saved_model"))
    results = []
    for start in range(0, len(paths), BATCH):
        chunk = paths[start:start + BATCH]
        try:
            out = runner(read_images(chunk))
        except Exception as error:  # the graph names `images[i]`: name the file
            match = re.search(r"images\[(\d+)\]", str(error))
            if match is None or int(match.group(1)) >= len(chunk):
                raise
            reason = re.search(r"images\[\d+\] ([^\]\n]*)", str(error)).group(1)
            raise ValueError(f"{chunk[int(match.group(1))]}: {reason}") from None
        for path, dets in zip(chunk, detections(out)):
            results.append({"image": path, "detections": dets})
    return results


def draw(results, out_dir):
    """Writes each image with its boxes and class names to `out_dir`
    (PNG, the source file's name); returns the written paths."""
    from PIL import Image, ImageDraw

    os.makedirs(out_dir, exist_ok=True)
    colours = ["red", "lime", "blue", "yellow", "magenta", "cyan"]
    written = []
    for result in results:
        with Image.open(result["image"]) as image:
            image = image.convert("RGB")
        pen = ImageDraw.Draw(image)
        for det in result["detections"]:
            colour = colours[det["class"] % len(colours)]
            x1, y1, x2, y2 = det["box_xyxy"]
            pen.rectangle([x1, y1, x2, y2], outline=colour, width=2)
            label = f"{det['name']} {det['score']:.2f}"
            left, top, right, bottom = pen.textbbox((x1, y1), label)
            y = max(y1 - (bottom - top) - 2, 0)
            pen.rectangle([x1, y, x1 + right - left + 2, y + bottom - top + 2],
                          fill=colour)
            pen.text((x1 + 1, y), label, fill="black")
        name = os.path.splitext(os.path.basename(result["image"]))[0]
        path = os.path.join(out_dir, name + ".png")
        image.save(path)
        written.append(path)
    return written


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "predict", help="detect objects in image files with an export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True,
                        help="export directory (saved_model/, *.tflite)")
    parser.add_argument("--images", nargs="+", required=True,
                        help="image files and/or directories")
    parser.add_argument("--tflite", nargs="?", const="fp32",
                        choices=["fp32", "fp16", "int8"],
                        help="run model_<precision>.tflite instead (default "
                        "fp32)")
    parser.add_argument("--out", help="detections JSON (default: "
                        "<draw>/detections.json, or stdout)")
    parser.add_argument("--draw", help="write images with boxes here")
    parser.set_defaults(func=run)
    return parser


def run(args):
    try:
        paths = image_paths(args.images)
    except FileNotFoundError as error:
        print(f"predict: error: {error}")
        return 2
    results = predict(args.export, paths, args.tflite)
    text = json.dumps(results, indent=2)
    out = args.out or (os.path.join(args.draw, "detections.json")
                       if args.draw else None)
    if args.draw:
        draw(results, args.draw)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text + "\n")
        print(f"{sum(len(r['detections']) for r in results)} detections in "
              f"{len(results)} images -> {out}"
              + (f"; drawn in {args.draw}" if args.draw else ""))
    else:
        print(text)
    return 0
