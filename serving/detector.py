"""One Keras model from images to detections: network, decode, NMS.

    images (B, H, W, 3) float32 in [0, 1]
      -> network (raw head outputs) -> decode layer -> NonMaxSuppression
      -> {"boxes": (B, K, 4), "scores": (B, K), "classes": (B, K) int32,
          "num_detections": (B,) int32}, padded with -1

The decode configuration travels with a model as `<model>.decode.json`:
`{"version": "v5", "layer": "YoloV5Decode", "input_shape", "num_classes",
**YoloV5Decode.get_config()}` (`keras_yolo.versions.decode_config`), the
same file `python -m serving convert` writes. Files of the older form (no
"layer": `{"version", "num_classes", "anchors", "strides", ...}`) still
load.
"""

import json
import os

import keras

from keras_yolo import versions
from keras_yolo.layers import NonMaxSuppression

OUTPUT_KEYS = ("boxes", "scores", "classes", "num_detections")
# The registry's defaults (each version's `serving_nms` / `eval_nms`).
SERVING_NMS = dict(versions.SERVING_NMS)
EVAL_NMS = dict(versions.EVAL_NMS)


def decode_config_path(model_path):
    """`x.keras` -> `x.decode.json`."""
    base = model_path[:-len(".keras")] if model_path.endswith(".keras") \
        else model_path
    return base + ".decode.json"


def save_decode_config(config, path):
    with open(path, "w") as f:
        json.dump(config, f, indent=2)


def load_decode_config(path):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"decode configuration {path!r} not found: it is written next to "
            "the model (`<model>.decode.json`) by training and by `python -m "
            "serving convert`; pass --decode.")
    with open(path) as f:
        return json.load(f)


def make_decode_layer(decode_config, bounding_box_format="xyxy"):
    """The decode layer of a decode configuration (`keras_yolo.versions`:
    the layer's own config, or an older recipe / importer dict)."""
    return versions.decode_layer(decode_config, bounding_box_format)


def build_detector(model, decode, bounding_box_format="xyxy",
                   input_shape=None, name="detector", **nms_kwargs):
    """Wraps a network, its decode layer and NMS into one functional model.

    Args:
        model: the network (images -> raw head outputs).
        decode: a decode layer, or a decode configuration dict.
        bounding_box_format: format of the output boxes (the decode layer's
            format when a layer is given).
        input_shape: `(H, W, 3)`; default the model's input shape.
        nms_kwargs: `NonMaxSuppression` arguments (default: the version's
            `serving_nms`, `SERVING_NMS` for an unregistered layer).

    Returns:
        a `keras.Model`: images -> `{"boxes", "scores", "classes",
        "num_detections"}`.

    Example:
        >>> detector = build_detector(model, {"version": "v5", ...}, "xyxy")
        >>> detector(images)["boxes"]
    """
    if isinstance(decode, dict):
        version = versions.get(decode.get("version"))
        decode = make_decode_layer(decode, bounding_box_format)
    else:
        version = versions.of_layer(decode)
    defaults = version.serving_nms if version is not None else SERVING_NMS
    box_format = getattr(decode, "bounding_box_format", bounding_box_format)
    shape = tuple(input_shape or model.input_shape[1:])
    images = keras.Input(shape, name="images")
    nms = NonMaxSuppression(bounding_box_format=box_format,
                            **{**defaults, **nms_kwargs})
    outputs = nms(decode(model(images)))
    return keras.Model(images, {k: outputs[k] for k in OUTPUT_KEYS},
                       name=name)
