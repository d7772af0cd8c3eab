"""One Keras model from images to detections: network, decode, NMS.

    images (B, H, W, 3) float32 in [0, 1]
      -> network (raw head outputs) -> decode layer -> NonMaxSuppression
      -> {"boxes": (B, K, 4), "scores": (B, K), "classes": (B, K) int32,
          "num_detections": (B,) int32}, padded with -1

The decode configuration travels with a model as `<model>.decode.json`
(`{"version": "v5", "num_classes", "anchors" (input pixels), "strides",
"input_shape", ...}`), the same file `python -m serving convert` writes.
"""

import json
import os

import keras

from keras_yolo.postprocess import NonMaxSuppression

OUTPUT_KEYS = ("boxes", "scores", "classes", "num_detections")
# Serving defaults: ultralytics detect.py (conf 0.25, IoU 0.45, 1000 max);
# mAP evaluation uses conf 0.001, IoU 0.6 (ultralytics val.py).
SERVING_NMS = {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 100}
EVAL_NMS = {"conf_thres": 0.001, "iou_thres": 0.6, "max_det": 300}


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
    """The decode layer of a version's raw outputs (`decode_config` as in
    the module docstring)."""
    version = decode_config.get("version")
    if version == "v1" and decode_config.get("parametrization"):
        from keras_yolo.layers import YoloV1Decode

        height, width = decode_config["input_shape"][:2]
        return YoloV1Decode(
            num_classes=decode_config["num_classes"],
            grid_size=decode_config["grid_size"],
            boxes_per_cell=decode_config["boxes_per_cell"],
            bounding_box_format=bounding_box_format,
            image_shape=(height, width),
            parametrization=decode_config["parametrization"],
            sqrt=decode_config.get("sqrt"),
            softmax=decode_config.get("softmax"))
    if version == "v5":
        from keras_yolo.weights import make_yolov5_decoder

        return make_yolov5_decoder(decode_config, bounding_box_format)
    if version in ("v1", "v2", "v3", "v4"):
        from keras_yolo.weights import make_decoder

        return make_decoder(decode_config, bounding_box_format)
    raise ValueError(f"decode_config['version'] must be v1..v5; got "
                     f"{version!r}.")


def build_detector(model, decode, bounding_box_format="xyxy",
                   input_shape=None, name="detector", **nms_kwargs):
    """Wraps a network, its decode layer and NMS into one functional model.

    Args:
        model: the network (images -> raw head outputs).
        decode: a decode layer, or a decode configuration dict.
        bounding_box_format: format of the output boxes (the decode layer's
            format when a layer is given).
        input_shape: `(H, W, 3)`; default the model's input shape.
        nms_kwargs: `NonMaxSuppression` arguments (default `SERVING_NMS`).

    Returns:
        a `keras.Model`: images -> `{"boxes", "scores", "classes",
        "num_detections"}`.

    Example:
        >>> detector = build_detector(model, {"version": "v5", ...}, "xyxy")
        >>> detector(images)["boxes"]
    """
    if isinstance(decode, dict):
        decode = make_decode_layer(decode, bounding_box_format)
    box_format = getattr(decode, "bounding_box_format", bounding_box_format)
    shape = tuple(input_shape or model.input_shape[1:])
    images = keras.Input(shape, name="images")
    nms = NonMaxSuppression(bounding_box_format=box_format,
                            **{**SERVING_NMS, **nms_kwargs})
    outputs = nms(decode(model(images)))
    return keras.Model(images, {k: outputs[k] for k in OUTPUT_KEYS},
                       name=name)
