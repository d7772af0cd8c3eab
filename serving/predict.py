"""`python -m serving predict`: detections of image files from an export.

    python -m serving predict --export runs/demo/export --images a.png b.jpg \
        --out predictions.json [--draw runs/demo/drawn]

Runs the SavedModel (default) or the TFLite file (`--tflite`) of an export
directory. Images are resized to the model's input size; boxes are returned
in `xyxy` pixels of the original image (exports use `xyxy` by default).
Also: `rest_request` / `parse_rest_response`, the JSON of TF Serving's REST
predict API (`POST /v1/models/<name>:predict`).
"""

import argparse
import json
import os

import numpy as np

SIGNATURE = "serving_default"
KEYS = ("boxes", "scores", "classes", "num_detections")


def rest_request(images):
    """Body of a TF Serving REST predict call: `{"signature_name",
    "inputs": {"images": [...]}}` (columnar form, any batch size)."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` must be (B, H, W, 3); got {images.shape}.")
    return {"signature_name": SIGNATURE, "inputs": {"images": images.tolist()}}


def parse_rest_response(body):
    """TF Serving's `{"outputs": {...}}` -> dict of numpy arrays."""
    outputs = body["outputs"] if "outputs" in body else body
    return {k: np.asarray(outputs[k]) for k in KEYS}


def load_images(paths, size):
    """Image files -> `(B, H, W, 3)` float32 in [0, 1] at `size` (H, W),
    and the original `(height, width)` of each."""
    from PIL import Image

    images, shapes = [], []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            shapes.append((image.height, image.width))
            image = image.resize((size[1], size[0]), Image.BILINEAR)
            images.append(np.asarray(image, np.float32) / 255.0)
    return np.stack(images), shapes


class SavedModelRunner:
    """Calls an exported SavedModel's `serving_default` signature."""

    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        self.signature = tf.saved_model.load(path).signatures[SIGNATURE]
        spec = self.signature.structured_input_signature[1]["images"]
        self.input_size = tuple(spec.shape[1:3])

    def __call__(self, images):
        out = self.signature(images=self._tf.constant(images, "float32"))
        return {k: out[k].numpy() for k in KEYS}


class TFLiteRunner:
    """Runs an exported TFLite file (batch 1) image by image."""

    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path)
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        shape = self.runner.get_input_details()["images"]["shape"]
        self.input_size = (int(shape[1]), int(shape[2]))

    def __call__(self, images):
        outs = [self.runner(images=np.asarray(image[None], np.float32))
                for image in images]
        return {k: np.concatenate([o[k] for o in outs], 0) for k in KEYS}


def predict(export_dir, image_paths, use_tflite=False, class_names=None):
    """Detections per image, boxes in `xyxy` pixels of the original image."""
    runner = (TFLiteRunner(os.path.join(export_dir, "model.tflite"))
              if use_tflite else
              SavedModelRunner(os.path.join(export_dir, "saved_model")))
    images, shapes = load_images(image_paths, runner.input_size)
    out = runner(images)
    results = []
    for i, path in enumerate(image_paths):
        n = int(out["num_detections"][i])
        scale = np.array([shapes[i][1] / runner.input_size[1],
                          shapes[i][0] / runner.input_size[0]] * 2)
        dets = []
        for j in range(n):
            cls = int(out["classes"][i, j])
            dets.append({
                "box_xyxy": (out["boxes"][i, j] * scale).round(2).tolist(),
                "score": round(float(out["scores"][i, j]), 4),
                "class": cls,
                **({"name": class_names[cls]} if class_names else {})})
        results.append({"image": path, "detections": dets})
    return results


def draw(results, out_dir):
    """Writes each image with its boxes drawn to `out_dir`."""
    from PIL import Image, ImageDraw

    os.makedirs(out_dir, exist_ok=True)
    colours = ["red", "lime", "blue", "yellow", "magenta", "cyan"]
    for result in results:
        with Image.open(result["image"]) as image:
            image = image.convert("RGB")
            pen = ImageDraw.Draw(image)
            for det in result["detections"]:
                colour = colours[det["class"] % len(colours)]
                pen.rectangle(det["box_xyxy"], outline=colour, width=2)
                label = det.get("name", str(det["class"]))
                pen.text(det["box_xyxy"][:2], f"{label} {det['score']:.2f}",
                         fill=colour)
            image.save(os.path.join(out_dir,
                                    os.path.basename(result["image"])))


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "predict", help="detect objects in image files with an export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True,
                        help="export directory (saved_model/, model.tflite)")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--tflite", action="store_true",
                        help="run model.tflite instead of the SavedModel")
    parser.add_argument("--class-names", nargs="+")
    parser.add_argument("--out", help="write the detections JSON here")
    parser.add_argument("--draw", help="write images with boxes here")
    parser.set_defaults(func=run)
    return parser


def run(args):
    results = predict(args.export, args.images, args.tflite, args.class_names)
    text = json.dumps(results, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.draw:
        draw(results, args.draw)
    print(text if not args.out else
          f"{sum(len(r['detections']) for r in results)} detections in "
          f"{len(results)} images -> {args.out}")
    return 0
