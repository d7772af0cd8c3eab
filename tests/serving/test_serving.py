"""serving: image bytes in, original-pixel boxes and class names out.

One tiny untrained detector (fixed seed) is exported once; its Keras path
(network + decode + NMS on an independently letterboxed image, boxes mapped
back with ultralytics' `scale_boxes` formula) is the reference for both
SavedModel signatures, the fp32 TFLite file and a fresh process that has
neither keras-yolo nor keras-cv and answers TF Serving request bodies.
"""

import base64
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import serving
from serving import client
from serving import predict as predict_lib
from serving.export import check_builtin_ops, export_detector, graph_ops
from serving.letterbox import PAD_VALUE, letterbox, letterbox_geometry

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

from tiny_detector import TinyDecode, build_tiny_model  # noqa: E402

SIZE = 64
MAX_DET = 80  # > the 64 cells: padded rows guaranteed
NAMES = ["circle", "rectangle", "triangle"]
# gRPC needs the optional `serving` extra (tensorflow-serving-api).
HAS_GRPC_API = importlib.util.find_spec("tensorflow_serving") is not None
KEYS = ["boxes", "class_names", "classes", "num_detections", "scores"]
# (height, width): no resize or an exact 2x reduction, so the reference
# letterbox below is exact arithmetic; both paddings (top and left).
SHAPES = [(48, 64), (96, 128), (64, 40), (128, 80)]


def reference_letterbox(image, size=SIZE):
    """ultralytics `LetterBox` for the scales 1 and 1/2, in numpy."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_h, new_w = int(round(h * r)), int(round(w * r))
    if r == 0.5:  # area averaging at 2x: the 2x2 mean
        image = image.reshape(new_h, 2, new_w, 2, 3).mean(axis=(1, 3))
    assert image.shape[:2] == (new_h, new_w)
    dh, dw = (size - new_h) / 2, (size - new_w) / 2
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    canvas = np.full((size, size, 3), PAD_VALUE, np.float32)
    canvas[top:top + new_h, left:left + new_w] = image
    return canvas, r, (left, top)


def reference_scale_boxes(boxes, r, pad, shape):
    """ultralytics `scale_boxes` + `clip_boxes` on xyxy."""
    out = boxes.astype(np.float64).copy()
    out[:, [0, 2]] -= pad[0]
    out[:, [1, 3]] -= pad[1]
    out /= r
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, shape[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, shape[0])
    return out


@pytest.fixture(scope="module")
def detector():
    model = build_tiny_model(SIZE, 3, seed=5)
    # An untrained net scores about 0.5 * 1/3: a low threshold keeps many.
    return serving.build_detector(model, TinyDecode(), "rel_center_xywh",
                                  conf_thres=0.05, iou_thres=0.5, max_det=MAX_DET)


@pytest.fixture(scope="module")
def pictures():
    """uint8 images of the SHAPES sizes (shapes-set content, resized by
    cropping and tiling so every size holds objects)."""
    from keras_yolo import data

    base, _ = data.generate(num_images=len(SHAPES), image_size=128, seed=7)
    return [np.ascontiguousarray(base[i, :h, :w]) for i, (h, w)
            in enumerate(SHAPES)]


@pytest.fixture(scope="module")
def encoded(pictures):
    return [tf.io.encode_png(p).numpy() for p in pictures]


@pytest.fixture(scope="module")
def expected(detector, pictures):
    """The Keras path: letterbox (numpy), detector, xyxy pixels, inverse."""
    out = []
    for picture in pictures:
        canvas, r, pad = reference_letterbox(picture.astype(np.float32) / 255)
        det = {k: v.numpy()[0] for k, v in detector(canvas[None]).items()}
        n = int(det["num_detections"])
        cx, cy, w, h = (det["boxes"][:n] * SIZE).T  # rel_center_xywh
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        out.append({"n": n, "classes": det["classes"][:n],
                    "scores": det["scores"][:n], "canvas_boxes": xyxy,
                    "boxes": reference_scale_boxes(xyxy, r, pad,
                                                   picture.shape),
                    "canvas": canvas, "r": r, "pad": pad})
        assert n > 0
    return out


@pytest.fixture(scope="module")
def exported(detector, tmp_path_factory, pictures):
    out = str(tmp_path_factory.mktemp("export"))
    report = export_detector(detector, out, NAMES, "rel_center_xywh",
                             tflite=("fp32",),
                             extra={"nms": {"conf_thres": 0.05}})
    return out, report


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(os.path.join(exported[0], "saved_model"))


def assert_same_detections(got, want, where):
    for i, w in enumerate(want):
        n = w["n"]
        assert int(got["num_detections"][i]) == n, where
        np.testing.assert_array_equal(got["classes"][i, :n], w["classes"],
                                      err_msg=where)
        np.testing.assert_allclose(got["scores"][i, :n], w["scores"],
                                   atol=1e-5, err_msg=where)
        np.testing.assert_allclose(got["boxes"][i, :n], w["boxes"],
                                   atol=1e-3, rtol=0, err_msg=where)
        if "class_names" in got:
            names = [v.decode() if isinstance(v, bytes) else v
                     for v in got["class_names"][i, :n]]
            assert names == [NAMES[c] for c in w["classes"]], where


def test_letterbox_geometry_is_ultralytics_formula():
    for h, w in [(480, 640), (640, 480), (1, 999), (333, 517), (64, 64),
                 (97, 13), (720, 1280)]:
        for size in [(64, 64), (640, 640), (96, 160)]:
            r = min(size[0] / h, size[1] / w)
            new_h, new_w = int(round(h * r)), int(round(w * r))
            top = int(round((size[0] - new_h) / 2 - 0.1))
            left = int(round((size[1] - new_w) / 2 - 0.1))
            scale, new, pad = letterbox_geometry((h, w), size)
            assert float(scale) == pytest.approx(r, rel=1e-6)
            assert new.numpy().tolist() == [new_h, new_w], (h, w, size)
            assert pad.numpy().tolist() == [top, left], (h, w, size)


def test_letterbox_pixels_match_the_reference(pictures):
    for picture in pictures:
        image = picture.astype(np.float32) / 255
        canvas, scale, pad = letterbox(tf.constant(image), (SIZE, SIZE))
        want, r, want_pad = reference_letterbox(image)
        np.testing.assert_allclose(canvas.numpy(), want, atol=1e-6)
        assert float(scale) == r and pad.numpy().tolist() == list(want_pad)


def test_same_detections_keras_both_signatures_and_tflite(
        exported, loaded, pictures, encoded, expected):
    from ai_edge_litert.interpreter import Interpreter

    out = loaded.signatures["serving_default"](images=tf.constant(encoded))
    assert_same_detections({k: v.numpy() for k, v in out.items()}, expected,
                           "serving_default")
    for i, picture in enumerate(pictures):  # one size a call
        out = loaded.signatures["serving_tensor"](
            images=tf.constant(picture[None].astype(np.float32) / 255))
        assert_same_detections({k: v.numpy() for k, v in out.items()},
                               expected[i:i + 1], f"serving_tensor {i}")
    runner = Interpreter(model_path=os.path.join(
        exported[0], "model_fp32.tflite")).get_signature_runner()
    for i, want in enumerate(expected):
        got = runner(images=want["canvas"][None])
        boxes = reference_scale_boxes(got["boxes"][0, :want["n"]],
                                      want["r"], want["pad"],
                                      pictures[i].shape)
        assert_same_detections({**got, "boxes": boxes[None]}, [want],
                               f"tflite fp32 {i}")


def test_padded_rows_and_clipping(loaded, pictures, encoded):
    out = loaded.signatures["serving_default"](images=tf.constant(encoded))
    out = {k: v.numpy() for k, v in out.items()}
    assert out["boxes"].shape == (len(pictures), MAX_DET, 4)
    assert np.any(out["num_detections"] < MAX_DET), "needs padded rows"
    for i, picture in enumerate(pictures):
        n = out["num_detections"][i]
        assert np.all(out["boxes"][i, n:] == -1)
        assert np.all(out["classes"][i, n:] == -1)
        assert np.all(out["class_names"][i, n:] == b"")
        boxes = out["boxes"][i, :n]
        assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= picture.shape[1])
        assert np.all(boxes[:, [1, 3]] <= picture.shape[0])
        # Untrained boxes overflow the image: the clip is exercised.
        assert np.any(boxes[:, [0, 2]] == picture.shape[1]) or np.any(
            boxes == 0)


def test_saved_model_signatures_assets_and_export_json(exported):
    out, report = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--all", "--dir",
                           os.path.join(out, "saved_model")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    blocks = {name: proc.stdout.split(f"signature_def['{name}']")[1].split(
        "Method name")[0] for name in ("serving_default", "serving_tensor")}
    inputs = blocks["serving_default"].split("output(s):")[0]
    assert "inputs['images']" in inputs and "DT_STRING" in inputs
    assert "(-1)" in inputs
    assert "DT_FLOAT" in blocks["serving_tensor"].split("output(s):")[0]
    for block in blocks.values():
        outputs = block.split("output(s):")[1]
        names = sorted(set(line.split("'")[1] for line in outputs.splitlines()
                           if "outputs['" in line))
        assert names == KEYS
        assert "DT_STRING" in outputs.split("outputs['class_names']")[1] \
            .split("outputs[")[0]
    assets = os.path.join(out, "saved_model", "assets")
    with open(os.path.join(assets, "class_names.txt")) as f:
        assert f.read().split() == NAMES
    with open(os.path.join(assets, "model_config.json")) as f:
        assert json.load(f)["class_names"] == NAMES
    with open(os.path.join(out, "export.json")) as f:
        written = json.load(f)
    assert written["class_names"] == NAMES
    assert written["nms"] == {"conf_thres": 0.05}
    assert written["input_size"] == [SIZE, SIZE]
    assert set(written["tflite"]) == {"fp32"}
    assert report["saved_model"]["bytes"] > 0


def test_saved_model_ops_are_core_tensorflow(exported, tmp_path):
    out, report = exported
    ops = graph_ops(os.path.join(out, "saved_model"))
    assert ops == report["saved_model"]["ops"]
    # decode, letterbox, checks and NMS are inside the graph:
    assert {"DecodeImage", "ResizeBilinear", "Sigmoid", "Exp", "Assert",
            "NonMaxSuppressionV4", "TopKV2"} <= set(ops)
    assert not set(ops) & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    # ...and the check does catch Python ops.
    module = tf.Module()
    module.f = tf.function(
        lambda x: tf.py_function(lambda v: v * 2, [x], tf.float32),
        input_signature=[tf.TensorSpec([2], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "py"))
    with pytest.raises(ValueError, match="PyFunc"):
        serving.check_core_ops(str(tmp_path / "py"))


@pytest.mark.slow
def test_tflite_fp16_int8_are_builtins_only_with_named_outputs(
        detector, pictures, expected, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    calibration = np.stack([p[:48, :40] for p in pictures]) / 255.0
    report = export_detector(detector, str(tmp_path), NAMES,
                             "rel_center_xywh",
                             tflite=("fp32", "fp16", "int8"),
                             calibration_images=calibration)
    sizes, boxes = {}, {}
    for precision in ("fp32", "fp16", "int8"):
        path = str(tmp_path / f"model_{precision}.tflite")
        ops = check_builtin_ops(path)
        assert ops == report["tflite"][precision]["ops"]
        assert "NON_MAX_SUPPRESSION_V4" in ops
        interpreter = Interpreter(model_path=path)
        runner = interpreter.get_signature_runner("serving_default")
        assert sorted(runner.get_output_details()) == [
            "boxes", "classes", "num_detections", "scores"]
        sizes[precision] = os.path.getsize(path)
        out = runner(images=expected[0]["canvas"][None])
        boxes[precision] = out["boxes"][0, :int(out["num_detections"][0])]
        if precision == "int8":
            kinds = {d["dtype"] for d in interpreter.get_tensor_details()}
            assert np.int8 in kinds, "int8 weights and activations"
            assert "QUANTIZE" in ops and "DEQUANTIZE" in ops
    # fp16 halves the float weights; int8 quarters them.
    assert sizes["fp16"] < 0.75 * sizes["fp32"]
    assert sizes["int8"] < 0.6 * sizes["fp32"]
    # fp16 keeps the boxes within a fraction of a pixel.
    n = min(len(boxes["fp32"]), len(boxes["fp16"]), 5)
    np.testing.assert_allclose(boxes["fp16"][:n], boxes["fp32"][:n],
                               atol=0.5)


def test_tflite_fp32_is_builtins_only_with_named_outputs(exported):
    from ai_edge_litert.interpreter import Interpreter

    out, report = exported
    path = os.path.join(out, "model_fp32.tflite")
    ops = check_builtin_ops(path)
    assert ops == report["tflite"]["fp32"]["ops"]
    assert "NON_MAX_SUPPRESSION_V4" in ops
    runner = Interpreter(model_path=path).get_signature_runner(
        "serving_default")
    assert sorted(runner.get_output_details()) == [
        "boxes", "classes", "num_detections", "scores"]
    # ...and the check does catch a Flex op.
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": tf.linalg.inv(x)},
                           input_signature=[tf.TensorSpec([2, 2],
                                                          tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.f.get_concrete_function()], module)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    flex = os.path.join(out, "flex.tflite")
    with open(flex, "wb") as f:
        f.write(converter.convert())
    with pytest.raises(ValueError, match="FlexMatrixInverse"):
        check_builtin_ops(flex)


ISOLATED = textwrap.dedent(r"""
    import base64, importlib.util, json, os, sys
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
    # keras_cv is installed beside TF: make it unimportable here.
    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("keras_cv", "keras_hub"):
                raise ImportError(f"{name} hidden by the test")
    sys.meta_path.insert(0, Refuse())
    PROJECT = ("keras_yolo", "training", "serving", "tiny_detector",
               "keras_cv")
    def hidden(m):
        try:
            return importlib.util.find_spec(m) is None
        except ImportError:
            return True
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[2])

    def rest(body):
        # TF Serving's row format with one named input: each instance is
        # the input's value, or {"images": value}; {"b64": s} is binary.
        request = json.loads(body)
        signature = model.signatures[request.get("signature_name",
                                                 "serving_default")]
        values = []
        for instance in request["instances"]:
            if isinstance(instance, dict) and "images" in instance:
                instance = instance["images"]
            values.append(base64.b64decode(instance["b64"]))
        out = signature(images=tf.constant(values, tf.string))
        out = {k: v.numpy() for k, v in out.items()}
        rows = [{k: (v[i].tolist() if v.dtype != object else
                     [s.decode() for s in v[i]]) if v.ndim > 1 else
                 v[i].item() for k, v in out.items()}
                for i in range(len(values))]
        return json.dumps({"predictions": rows})

    def grpc(data):
        from tensorflow_serving.apis import predict_pb2
        request = predict_pb2.PredictRequest.FromString(data)
        signature = model.signatures[request.model_spec.signature_name]
        images = tf.make_ndarray(request.inputs["images"])
        out = signature(images=tf.constant(images))
        response = predict_pb2.PredictResponse()
        for k, v in out.items():
            response.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
        return response.SerializeToString()

    answers = {}
    for name in sys.argv[3:]:
        with open(name, "rb") as f:
            data = f.read()
        answer = grpc(data) if name.endswith(".pb") else rest(data).encode()
        with open(name + ".answer", "wb") as f:
            f.write(answer)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in PROJECT)
    print("RESULT" + json.dumps({"hidden": {m: hidden(m) for m in PROJECT},
                                 "loaded": loaded}))
""")


def test_fresh_process_answers_rest_and_grpc_requests_without_the_project(
        exported, encoded, expected, tmp_path):
    out, _ = exported
    script = tmp_path / "serve.py"
    script.write_text(ISOLATED)
    files = []
    for named in (False, True):
        body = client.rest_request(encoded, named=named)
        path = tmp_path / f"rest_{named}.json"
        path.write_text(json.dumps(body))
        files.append(str(path))
    if HAS_GRPC_API:
        request = client.grpc_request(encoded, model_name="yolo")
        (tmp_path / "grpc.pb").write_bytes(request.SerializeToString())
        files.append(str(tmp_path / "grpc.pb"))
    proc = subprocess.run(
        [sys.executable, "-I", str(script), ROOT,
         os.path.join(out, "saved_model"), *files],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT"):])
    assert all(result["hidden"].values()), result["hidden"]
    assert result["loaded"] == []
    answers = [client.parse_rest_response((tmp_path / f"rest_{n}.json.answer")
                                          .read_text()) for n in (False, True)]
    if HAS_GRPC_API:
        from tensorflow_serving.apis import predict_pb2

        answers.append(client.parse_grpc_response(
            predict_pb2.PredictResponse.FromString(
                (tmp_path / "grpc.pb.answer").read_bytes())))
    for where, dets in zip(("rest", "rest named", "grpc"), answers):
        assert len(dets) == len(expected)
        for got, want in zip(dets, expected):
            assert [d["name"] for d in got] == [NAMES[c] for c in
                                                want["classes"]], where
            np.testing.assert_allclose([d["box_xyxy"] for d in got],
                                       want["boxes"], atol=2e-3,
                                       err_msg=where)  # JSON: 3 decimals
            np.testing.assert_allclose([d["score"] for d in got],
                                       want["scores"], atol=1e-5)


def test_client_request_bodies_follow_tf_serving_rest_api(encoded):
    body = client.rest_request(encoded[:2])
    assert body == {"signature_name": "serving_default", "instances": [
        {"b64": base64.b64encode(encoded[0]).decode()},
        {"b64": base64.b64encode(encoded[1]).decode()}]}
    named = client.rest_request(encoded[:1], named=True)
    assert named["instances"] == [{"images": body["instances"][0]}]
    if HAS_GRPC_API:
        request = client.grpc_request(encoded[:2], model_name="m")
        assert request.model_spec.name == "m"
        tensor = request.inputs["images"]
        assert tensor.dtype == tf.string.as_datatype_enum
        assert [d.size for d in tensor.tensor_shape.dim] == [2]
        assert list(tensor.string_val) == encoded[:2]
        np.testing.assert_array_equal(tf.make_ndarray(tensor),
                                      np.array(encoded[:2], object))
    else:
        with pytest.raises(ImportError, match=r"keras-yolo\[serving\]"):
            client.grpc_request(encoded[:2])
    # columnar answers parse like row answers
    columnar = {"outputs": {"boxes": [[[1, 2, 3, 4], [-1] * 4]],
                            "scores": [[0.5, -1]], "classes": [[2, -1]],
                            "num_detections": [1],
                            "class_names": [["triangle", ""]]}}
    assert client.parse_rest_response(columnar) == [[{
        "box_xyxy": [1.0, 2.0, 3.0, 4.0], "score": 0.5, "class": 2,
        "name": "triangle"}]]
    with pytest.raises(RuntimeError, match="bad input"):
        client.parse_rest_response({"error": "bad input"})
    with pytest.raises(ValueError, match="empty"):
        client.rest_request([])


def test_predict_command_draws_names_and_writes_json(exported, pictures,
                                                     expected, tmp_path):
    from PIL import Image

    from serving.__main__ import main

    folder = tmp_path / "images"
    folder.mkdir()
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(folder / f"p{i}.png")
    drawn = tmp_path / "drawn"
    assert main(["predict", "--export", exported[0], "--images",
                 str(folder), "--draw", str(drawn)]) == 0
    with open(drawn / "detections.json") as f:
        results = json.load(f)
    assert [os.path.basename(r["image"]) for r in results] == [
        f"p{i}.png" for i in range(len(pictures))]
    for result, want, picture in zip(results, expected, pictures):
        np.testing.assert_allclose([d["box_xyxy"] for d in
                                    result["detections"]], want["boxes"],
                                   atol=2e-3)
        assert {d["name"] for d in result["detections"]} <= set(NAMES)
        with Image.open(drawn / os.path.basename(result["image"])) as image:
            assert image.size == (picture.shape[1], picture.shape[0])
            changed = np.any(np.asarray(image) != picture, axis=-1)
        assert changed.mean() > 0.01  # boxes and labels drawn
    lite = predict_lib.predict(exported[0], [str(folder / "p0.png")],
                               tflite="fp32")
    np.testing.assert_allclose([d["box_xyxy"] for d in lite[0]["detections"]],
                               expected[0]["boxes"], atol=2e-3)


BAD_INPUTS = textwrap.dedent(r"""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    export, png = sys.argv[1], open(sys.argv[2], "rb").read()
    model = tf.saved_model.load(os.path.join(export, "saved_model"))
    tensor = model.signatures["serving_tensor"]
    encoded = model.signatures["serving_default"]
    good = np.full((1, 48, 64, 3), 0.5, np.float32)
    cases = {
        "rank 0": lambda: tensor(images=tf.constant(0.5)),
        "rank 3": lambda: tensor(images=tf.constant(good[0])),
        "rank 5": lambda: tensor(images=tf.constant(good[None])),
        "4 channels": lambda: tensor(images=tf.zeros((1, 48, 64, 4))),
        "batch 0": lambda: tensor(images=tf.zeros((0, 48, 64, 3))),
        "height 0": lambda: tensor(images=tf.zeros((1, 0, 64, 3))),
        "NaN": lambda: tensor(images=tf.constant(
            np.where(np.arange(3) == 1, np.nan, good))),
        "Inf": lambda: tensor(images=tf.constant(good * np.inf)),
        "1e30": lambda: tensor(images=tf.constant(good * 2e30)),
        "0..255": lambda: tensor(images=tf.constant(good * 255)),
        "negative": lambda: tensor(images=tf.constant(-good)),
        "int32": lambda: tensor(images=tf.zeros((1, 48, 64, 3), tf.int32)),
        "no bytes": lambda: encoded(images=tf.constant([], tf.string)),
        "garbage at 1": lambda: encoded(images=tf.constant(
            [png, b"not an image"])),
        "empty at 0": lambda: encoded(images=tf.constant([b"", png])),
        "truncated png": lambda: encoded(images=tf.constant([png[:60]])),
    }
    result = {}
    for name, call in cases.items():
        try:
            out = call()
            result[name] = ["ok", int(out["num_detections"].numpy().sum())]
        except Exception as error:
            result[name] = [type(error).__name__, str(error)[:400]]
    # TFLite: the interpreter checks shapes; values are sanitized.
    runner = Interpreter(model_path=os.path.join(
        export, "model_fp32.tflite")).get_signature_runner()
    for name, image in {
            "tflite NaN": np.full((1, 64, 64, 3), np.nan, np.float32),
            "tflite 1e30": np.full((1, 64, 64, 3), 1e30, np.float32),
            "tflite rank 3": np.zeros((64, 64, 3), np.float32)}.items():
        try:
            out = runner(images=image)
            result[name] = ["ok", bool(np.isfinite(out["boxes"]).all()
                                       and np.isfinite(out["scores"]).all())]
        except Exception as error:
            result[name] = [type(error).__name__, str(error)[:400]]
    out = encoded(images=tf.constant([png]))
    result["still serving"] = int(out["num_detections"].numpy()[0])
    print("RESULT" + json.dumps(result))
""")


def test_predict_names_the_file_that_is_no_image(exported, pictures, tmp_path):
    from PIL import Image

    good, bad = tmp_path / "good.png", tmp_path / "notes.jpg"
    Image.fromarray(pictures[0]).save(good)
    bad.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.jpg: is not a JPEG, PNG"):
        predict_lib.predict(exported[0], [str(good), str(bad)])


def test_malformed_inputs_are_refused_cleanly_in_a_subprocess(
        exported, encoded, tmp_path):
    """#13.7: every malformed input is an InvalidArgumentError saying what
    is wrong, never a crash: run in a subprocess so an abort fails this test only."""
    script = tmp_path / "bad.py"
    script.write_text(BAD_INPUTS)
    (tmp_path / "a.png").write_bytes(encoded[0])
    proc = subprocess.run([sys.executable, str(script), exported[0],
                           str(tmp_path / "a.png")], capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, f"crashed ({proc.returncode}): " + \
        proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    result = json.loads(lines[-1][len("RESULT"):])
    expected = {
        "rank 0": "must be a float32 batch (B, H, W, 3)",
        "rank 3": "must be a float32 batch (B, H, W, 3)",
        "rank 5": "must be a float32 batch (B, H, W, 3)",
        "4 channels": "must be a float32 batch (B, H, W, 3)",
        "batch 0": "at least one image",
        "height 0": "at least one image",
        "NaN": "must be finite",
        "Inf": "must be finite",
        "1e30": "must be in [0, 1]",
        "0..255": "must be in [0, 1] (divide 8-bit images by 255)",
        "negative": "must be in [0, 1]",
        "no bytes": "at least one encoded image",
        "garbage at 1": "images[1] is not a JPEG, PNG, GIF, BMP or WebP image "
                        "(12 bytes)",
        "empty at 0": "images[0] is not a JPEG, PNG, GIF, BMP or WebP image "
                      "(0 bytes)",
    }
    for name, message in expected.items():
        kind, text = result[name]
        assert kind == "InvalidArgumentError", (name, result[name])
        assert message in text, (name, text)
    # the signature's dtype is checked before the graph runs (TF Serving
    # refuses it the same way)
    assert result["int32"][0] == "InvalidArgumentError", result["int32"]
    assert "int32" in result["int32"][1] and "float" in result["int32"][1]
    assert result["truncated png"][0] == "InvalidArgumentError"
    assert result["tflite NaN"] == ["ok", True]
    assert result["tflite 1e30"] == ["ok", True]
    # the interpreter refuses it (a Python exception, not an abort)
    assert result["tflite rank 3"][0] in ("ValueError", "RuntimeError")
    assert result["still serving"] > 0


def test_class_names_come_from_the_run_directory_or_a_file(tmp_path):
    from serving.export import load_class_names

    model = tmp_path / "run" / "model.keras"
    model.parent.mkdir()
    assert load_class_names(2, model_path=str(model)) == ["class_0",
                                                          "class_1"]
    (model.parent / "class_names.json").write_text('["cat", "dog"]')
    assert load_class_names(2, model_path=str(model)) == ["cat", "dog"]
    text = tmp_path / "names.txt"
    text.write_text("bird\nfish\n\n")
    assert load_class_names(2, str(text), str(model)) == ["bird", "fish"]
    keyed = tmp_path / "keyed.json"
    keyed.write_text('{"names": {"1": "b", "0": "a", "10": "k", "2": "c", '
                     '"3": "d", "4": "e", "5": "f", "6": "g", "7": "h", '
                     '"8": "i", "9": "j"}}')
    assert load_class_names(11, str(keyed)) == list("abcdefghijk")
    with pytest.raises(ValueError, match=r"names.txt: expected a list of 3"):
        load_class_names(3, str(text))
    broken = tmp_path / "broken.json"
    broken.write_text("[")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_class_names(2, str(broken))


def test_convert_from_yolov8_writes_the_decode_layers_config(tmp_path):
    """`python -m serving convert --from yolov8`: the reloaded model and the decoder built from its decode.json
    give the importer's own decoding of the checkpoint."""
    from conftest import require_peer

    torch = require_peer("torch", "(ultralytics 8 checkpoint)")
    tasks = require_peer("ultralytics.nn.tasks", "(ultralytics 8 checkpoint)")
    import keras

    from keras_yolo import versions
    from keras_yolo.weights import load_yolov8
    from serving.__main__ import main

    torch.manual_seed(0)
    state = tasks.DetectionModel("yolov8n.yaml", nc=2, verbose=False).eval().state_dict()
    npz = str(tmp_path / "v8n.npz")
    np.savez(npz, **{k: v.detach().numpy() for k, v in state.items()})
    out = str(tmp_path / "v8n.keras")
    assert main(["convert", "--from", "yolov8", "--checkpoint", npz, "--out", out,
                 "--input-size", "64", "64"]) == 0
    with open(str(tmp_path / "v8n.decode.json")) as f:
        saved = json.load(f)
    assert (saved["version"], saved["layer"], saved["num_classes"]) == ("v8", "YoloV8Decode", 2)
    reference = load_yolov8(npz, input_shape=(64, 64, 3))
    images = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype("float32")
    expected = versions.decode_layer(reference.decode_config, "xyxy")(reference(images))
    actual = versions.decode_layer(saved, "xyxy")(keras.saving.load_model(out)(images))
    for key in ("boxes", "objectness", "class_probs"):
        np.testing.assert_array_equal(np.asarray(actual[key]), np.asarray(expected[key]))
