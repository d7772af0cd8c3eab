"""A yolov8 detector exported like the other versions: decoding and NMS inside the SavedModel and the TFLite file.

Reference: the Keras detector itself (`serving.build_detector`: small_v8 +
`YoloV8Decode` + NMS) on the same 64 x 64 images, which the signatures take
without resizing (letterbox scale 1, no padding), so every output must agree
once its boxes are clipped to the image as the signatures clip them.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

import serving
from keras_yolo.layers import YoloV8Decode
from keras_yolo.models.yolov8 import small_v8
from serving.export import export_detector

pytestmark = pytest.mark.slow

SIZE = 64
NAMES = ["circle", "rectangle", "triangle"]
NMS = {"conf_thres": 0.3, "iou_thres": 0.7, "max_det": 30}


@pytest.fixture(scope="module")
def detector():
    import keras

    keras.utils.set_random_seed(3)
    model = small_v8(num_classes=len(NAMES), input_size=SIZE)
    for level in range(3):  # class priors near 0.3 instead of 1e-4: an untrained net then has detections
        bias = model.get_layer(f"m22_cv3_{level}_2").bias
        bias.assign(np.full(bias.shape, -0.8, "float32"))
    decode = YoloV8Decode(strides=(8, 16, 32), reg_max=16, num_classes=len(NAMES), bounding_box_format="xyxy")
    return serving.build_detector(model, decode, "xyxy", **NMS)


@pytest.fixture(scope="module")
def images():
    from keras_yolo import data

    pixels, _ = data.generate(num_images=2, image_size=SIZE, seed=11)
    return np.asarray(pixels, np.uint8)


@pytest.fixture(scope="module")
def expected(detector, images):
    out = {k: v.numpy() for k, v in detector(images.astype(np.float32) / 255).items()}
    assert out["num_detections"].min() > 0
    # the signatures answer in the original image's pixels, clipped to it (ultralytics' scale_boxes)
    out["boxes"] = out["boxes"].clip(0, SIZE)
    return out


@pytest.fixture(scope="module")
def exported(detector, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("v8export"))
    export_detector(detector, out, NAMES, "xyxy", tflite=("fp32",), extra={"nms": NMS})
    return out


def _assert_same(got, want, where):
    for i, n in enumerate(want["num_detections"]):
        n = int(n)
        assert int(got["num_detections"][i]) == n, where
        np.testing.assert_array_equal(got["classes"][i, :n], want["classes"][i, :n], err_msg=where)
        np.testing.assert_allclose(got["scores"][i, :n], want["scores"][i, :n], atol=1e-5, err_msg=where)
        np.testing.assert_allclose(got["boxes"][i, :n], want["boxes"][i, :n], atol=1e-3, err_msg=where)


def test_saved_model_signatures_give_the_keras_detections(exported, images, expected):
    loaded = tf.saved_model.load(os.path.join(exported, "saved_model"))
    tensor = loaded.signatures["serving_tensor"](images=tf.constant(images.astype(np.float32) / 255))
    _assert_same({k: v.numpy() for k, v in tensor.items()}, expected, "serving_tensor")
    encoded = tf.constant([tf.io.encode_png(image).numpy() for image in images])
    default = loaded.signatures["serving_default"](images=encoded)
    _assert_same({k: v.numpy() for k, v in default.items()}, expected, "serving_default")
    names = default["class_names"].numpy()[0, :int(expected["num_detections"][0])]
    assert [n.decode() for n in names] == [NAMES[c] for c in expected["classes"][0, :len(names)]]


def test_tflite_gives_the_keras_detections(exported, images, expected):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=os.path.join(exported, "model_fp32.tflite")).get_signature_runner()
    for i, image in enumerate(images):
        got = runner(images=image[None].astype(np.float32) / 255)   # boxes of the network input, unclipped
        got["boxes"] = got["boxes"].clip(0, SIZE)
        _assert_same(got, {k: v[i:i + 1] for k, v in expected.items()}, f"tflite {i}")


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args, timeout=1800):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_cli_trains_evaluates_and_exports_v8(tmp_path):
    import json

    run = str(tmp_path / "run")
    _run("training", "train", "--version", "v8", "--data", "shapes", "--image-size", "64",
         "--train-images", "32", "--val-images", "16", "--epochs", "1", "--batch-size", "8", "--out", run)
    with open(os.path.join(run, "model.decode.json")) as f:
        decode = json.load(f)
    assert (decode["version"], decode["layer"], decode["reg_max"], decode["num_classes"]) == (
        "v8", "YoloV8Decode", 16, 3)
    with open(os.path.join(run, "metrics.json")) as f:
        trained = json.load(f)
    _run("training", "evaluate", "--run", run, "--image-size", "64", "--val-images", "16")
    with open(os.path.join(run, "evaluate.json")) as f:
        evaluated = json.load(f)
    assert evaluated["num_images"] == 16
    assert evaluated["map50"] == pytest.approx(trained["map50"], abs=1e-6)
    out = str(tmp_path / "export")
    _run("serving", "export", "--model", os.path.join(run, "model.keras"), "--out", out, "--tflite", "fp32")
    with open(os.path.join(out, "export.json")) as f:
        assert json.load(f)["decode"]["version"] == "v8"
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    result = loaded.signatures["serving_tensor"](images=tf.zeros((1, 80, 48, 3)))
    assert result["boxes"].shape[-1] == 4 and result["num_detections"].shape == (1,)
    assert os.path.exists(os.path.join(out, "model_fp32.tflite"))
