"""keras-yolo serving: export, predict, clients, conversion of pretrained
weights.

Names are imported lazily, so `python -m serving --help` does not load
TensorFlow. (`serving.export.export` and `serving.predict.predict` stay in
their modules: the module names are the `python -m serving` commands.)
"""

import importlib

_EXPORTS = {
    "EVAL_NMS": "serving.detector", "SERVING_NMS": "serving.detector",
    "build_detector": "serving.detector",
    "load_decode_config": "serving.detector",
    "make_decode_layer": "serving.detector",
    "save_decode_config": "serving.detector",
    "DetectorModule": "serving.signatures",
    "check_builtin_ops": "serving.export", "check_core_ops": "serving.export",
    "export_detector": "serving.export",
    "export_saved_model": "serving.export", "export_tflite": "serving.export",
    "graph_ops": "serving.export", "load_class_names": "serving.export",
    "tflite_ops": "serving.export",
    "letterbox": "serving.letterbox",
    "unletterbox_boxes": "serving.letterbox",
    "grpc_request": "serving.client", "parse_grpc_response": "serving.client",
    "parse_rest_response": "serving.client", "rest_request": "serving.client",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
