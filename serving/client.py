"""Requests to a served export and their answers as detections.

TF Serving's REST predict API (`POST /v1/models/<name>:predict`) with the
bytes signature: the body is the row ("instances") format, one instance per
image; binary values go as `{"b64": <base64>}` (TF Serving REST API,
"Encoding binary values"). With a single named input an instance may be the
value itself, as here; `rest_request(..., named=True)` writes
`{"images": {"b64": ...}}` instead, which TF Serving reads the same.

    body = rest_request(["a.jpg", "b.png"])
    # curl -d @body.json http://localhost:8501/v1/models/yolo:predict
    detections = parse_rest_response(response_json)

gRPC (`tensorflow-serving-api`, the `serving` extra): `grpc_request` builds
a `PredictRequest` with a `DT_STRING` tensor `(B,)`; `parse_grpc_response`
reads the `PredictResponse`. Neither needs TensorFlow or keras-yolo beyond
numpy (the gRPC protos come with `tensorflow-serving-api`).

Detections: per image a list of `{"box_xyxy": [x1, y1, x2, y2] (original
pixels), "score", "class", "name"}`.
"""

import base64
import os

import numpy as np

SIGNATURE = "serving_default"
INPUT = "images"
OUTPUT_KEYS = ("boxes", "scores", "classes", "num_detections",
               "class_names")
_DT_STRING = 7  # tensorflow/core/framework/types.proto


def read_images(images):
    """Paths or bytes -> list of encoded image bytes."""
    if isinstance(images, (str, bytes, os.PathLike)):
        images = [images]
    out = []
    for image in images:
        if isinstance(image, bytes):
            out.append(image)
        else:
            with open(image, "rb") as f:
                out.append(f.read())
    if not out:
        raise ValueError("`images` is empty: give at least one image.")
    return out


def rest_request(images, signature_name=SIGNATURE, named=False):
    """TF Serving REST predict body for encoded images (paths or bytes):
    `{"signature_name", "instances": [{"b64": ...}, ...]}`."""
    instances = [{"b64": base64.b64encode(data).decode("ascii")}
                 for data in read_images(images)]
    if named:
        instances = [{INPUT: instance} for instance in instances]
    return {"signature_name": signature_name, "instances": instances}


def grpc_request(images, model_name="yolo", signature_name=SIGNATURE):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` with
    `inputs["images"]` a `DT_STRING` tensor `(B,)` of the encoded images."""
    try:
        from tensorflow_serving.apis import predict_pb2
    except ImportError as error:
        raise ImportError(
            "gRPC requests need tensorflow-serving-api: pip install "
            "'keras-yolo[serving]'.") from error
    data = read_images(images)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    tensor = request.inputs[INPUT]
    tensor.dtype = _DT_STRING
    tensor.tensor_shape.dim.add().size = len(data)
    tensor.string_val.extend(data)
    return request


def parse_rest_response(body):
    """TF Serving REST answer (row `"predictions"` or columnar `"outputs"`,
    a dict or its JSON text) -> detections per image."""
    if isinstance(body, (str, bytes)):
        import json

        body = json.loads(body)
    if "error" in body:
        raise RuntimeError(f"TF Serving error: {body['error']}")
    if "predictions" in body:
        rows = body["predictions"]
        outputs = {k: [row[k] for row in rows] for k in OUTPUT_KEYS}
    elif "outputs" in body:
        outputs = body["outputs"]
    else:
        raise ValueError(f"not a TF Serving predict answer: keys "
                         f"{sorted(body)}.")
    return detections(outputs)


def _tensor_to_numpy(proto):
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.dtype == _DT_STRING:
        return np.array(list(proto.string_val), dtype=object).reshape(dims)
    dtype = {1: np.float32, 3: np.int32, 9: np.int64}[proto.dtype]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype).reshape(dims)
    values = {1: proto.float_val, 3: proto.int_val,
              9: proto.int64_val}[proto.dtype]
    return np.asarray(values, dtype).reshape(dims)


def parse_grpc_response(response):
    """`PredictResponse` -> detections per image."""
    return detections({k: _tensor_to_numpy(response.outputs[k])
                       for k in OUTPUT_KEYS if k in response.outputs})


def detections(outputs):
    """Signature outputs (arrays or nested lists) -> per image a list of
    `{"box_xyxy", "score", "class", "name"}` (the first `num_detections`
    rows)."""
    boxes = np.asarray(outputs["boxes"], np.float64)
    scores = np.asarray(outputs["scores"], np.float64)
    classes = np.asarray(outputs["classes"], np.int64)
    counts = np.asarray(outputs["num_detections"], np.int64).reshape(-1)
    names = outputs.get("class_names")
    result = []
    for i, count in enumerate(counts):
        rows = []
        for j in range(int(count)):
            name = names[i][j] if names is not None else str(classes[i, j])
            if isinstance(name, bytes):
                name = name.decode("utf-8")
            rows.append({"box_xyxy": [round(float(v), 3)
                                      for v in boxes[i, j]],
                         "score": round(float(scores[i, j]), 5),
                         "class": int(classes[i, j]), "name": name})
        result.append(rows)
    return result
