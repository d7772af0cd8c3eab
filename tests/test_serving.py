"""serving: SavedModel with decode + NMS inside (core TF ops, loads without
the project), TFLite matching Keras, request helpers."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import serving
from serving import predict as predict_lib
from serving.export import graph_ops

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

from tiny_detector import TinyDecode, build_tiny_model  # noqa: E402

IMAGE = 64
KEYS = ["boxes", "classes", "num_detections", "scores"]


@pytest.fixture(scope="module")
def detector():
    model = build_tiny_model(IMAGE, 3, seed=5)
    # An untrained net scores about 0.5 * 1/3: a low threshold keeps many.
    return serving.build_detector(model, TinyDecode(), "rel_center_xywh",
                                  conf_thres=0.05, iou_thres=0.5, max_det=20)


@pytest.fixture(scope="module")
def images():
    from keras_yolo import data

    pictures, _ = data.generate(num_images=3, image_size=IMAGE, seed=7)
    return pictures.astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def exported(detector, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export"))
    report = serving.export_detector(detector, out)
    return out, report


def test_detector_outputs_padded_detections(detector, images):
    out = detector(images)
    assert sorted(out) == KEYS
    n = out["num_detections"].numpy()
    assert out["boxes"].shape == (3, 20, 4) and n.shape == (3,)
    assert np.all(n > 0), "the low threshold keeps detections"
    for i in range(3):
        assert np.all(out["classes"].numpy()[i, n[i]:] == -1)
        assert np.all(out["scores"].numpy()[i, n[i]:] == -1)
        scores = out["scores"].numpy()[i, :n[i]]
        assert np.all(np.diff(scores) <= 0) and np.all(scores > 0.05)


def test_saved_model_signature_is_exactly_the_detection_keys(exported):
    out, report = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--all", "--dir",
                           os.path.join(out, "saved_model")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    block = text.split("signature_def['serving_default']")[1].split(
        "Method name")[0]
    inputs = block.split("output(s):")[0]
    assert "inputs['images']" in inputs and "(-1, 64, 64, 3)" in inputs
    names = sorted(set(
        line.split("'")[1] for line in block.split("output(s):")[1].splitlines()
        if "outputs['" in line))
    assert names == KEYS
    assert "DT_INT32" in block.split("outputs['classes']")[1].split(
        "outputs[")[0]
    assert report["saved_model"]["bytes"] > 0 and report["tflite"]["bytes"] > 0


def test_saved_model_ops_are_core_tensorflow(exported, tmp_path):
    out, report = exported
    ops = graph_ops(os.path.join(out, "saved_model"))
    assert ops == report["saved_model"]["ops"]
    # decode and NMS are inside the graph:
    assert {"Sigmoid", "Exp", "NonMaxSuppressionV4", "TopKV2"} <= set(ops)
    assert not set(ops) & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    # ...and the check does catch Python ops.
    module = tf.Module()
    module.f = tf.function(
        lambda x: tf.py_function(lambda v: v * 2, [x], tf.float32),
        input_signature=[tf.TensorSpec([2], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "py"))
    with pytest.raises(ValueError, match="PyFunc"):
        serving.check_core_ops(str(tmp_path / "py"))


ISOLATED = textwrap.dedent(r"""
    import importlib.util, json, os, sys
    # -I already dropped the script directory, PYTHONPATH and user site;
    # drop any editable-install hook and any path into the project too.
    root = os.path.realpath(sys.argv[1])
    def editable(finder):
        names = (getattr(finder, "__module__", ""), type(finder).__module__,
                 getattr(finder, "__name__", ""))
        return any("editable" in str(n).lower() for n in names)
    sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
    # The interpreter's own environment may live inside the project (CI's
    # .venv); keep it, drop every other path into the project.
    prefix = os.path.realpath(sys.prefix)
    def inside(path, folder):
        path = os.path.realpath(path or ".")
        return path == folder or path.startswith(folder + os.sep)
    sys.path[:] = [p for p in sys.path
                   if not inside(p, root) or inside(p, prefix)]
    hidden = {m: importlib.util.find_spec(m) is None
              for m in ("keras_yolo", "training", "serving", "tiny_detector")}
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    fn = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
    out = fn(images=tf.constant(np.load(sys.argv[3])))
    np.savez(sys.argv[4], **{k: v.numpy() for k, v in out.items()})
    loaded = sorted(m for m in sys.modules
                    if m.split(".")[0] in ("keras_yolo", "training",
                                           "serving", "tiny_detector"))
    print("RESULT" + json.dumps({"hidden": hidden, "loaded": loaded,
                                 "keys": sorted(out)}))
""")


def test_saved_model_runs_in_a_process_without_the_project(
        exported, detector, images, tmp_path):
    out, _ = exported
    script = tmp_path / "serve.py"
    script.write_text(ISOLATED)
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run(
        [sys.executable, "-I", str(script), ROOT,
         os.path.join(out, "saved_model"), str(tmp_path / "images.npy"),
         str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=180, cwd=str(tmp_path),
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT"):])
    assert all(result["hidden"].values()), result["hidden"]
    assert result["loaded"] == [] and result["keys"] == KEYS
    served = np.load(tmp_path / "out.npz")
    expected = detector(images)
    for key in KEYS:
        np.testing.assert_allclose(served[key], expected[key].numpy(),
                                   rtol=1e-5, atol=1e-5, err_msg=key)


def test_tflite_matches_keras(exported, detector, images):
    from ai_edge_litert.interpreter import Interpreter

    out, _ = exported
    runner = Interpreter(model_path=os.path.join(out, "model.tflite")) \
        .get_signature_runner("serving_default")
    assert sorted(runner.get_output_details()) == KEYS
    for image in images:
        got = runner(images=image[None])
        want = {k: v.numpy() for k, v in detector(image[None]).items()}
        assert int(want["num_detections"][0]) > 0
        np.testing.assert_array_equal(got["num_detections"],
                                      want["num_detections"])
        np.testing.assert_array_equal(got["classes"], want["classes"])
        np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)
        np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-4)


def test_predict_runners_and_rest_helpers(exported, detector, images,
                                          tmp_path):
    from PIL import Image

    out, _ = exported
    path = str(tmp_path / "a.png")
    Image.fromarray((images[0] * 255).round().astype(np.uint8)).save(path)
    saved = predict_lib.SavedModelRunner(os.path.join(out, "saved_model"))
    lite = predict_lib.TFLiteRunner(os.path.join(out, "model.tflite"))
    assert saved.input_size == lite.input_size == (IMAGE, IMAGE)
    batch, _ = predict_lib.load_images([path], saved.input_size)
    a, b = saved(batch), lite(batch)
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    results = predict_lib.predict(out, [path], use_tflite=False)
    assert len(results[0]["detections"]) == int(a["num_detections"][0])
    body = predict_lib.rest_request(batch)
    assert body["signature_name"] == "serving_default"
    assert np.asarray(body["inputs"]["images"]).shape == (1, IMAGE, IMAGE, 3)
    parsed = predict_lib.parse_rest_response(
        {"outputs": {k: v.tolist() for k, v in a.items()}})
    np.testing.assert_array_equal(parsed["classes"], a["classes"])
    with pytest.raises(ValueError, match="images"):
        predict_lib.rest_request(np.zeros((4, 4, 3)))
