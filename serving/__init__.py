"""keras-yolo serving: export, predict, conversion of pretrained weights."""

from serving.detector import (EVAL_NMS, SERVING_NMS, build_detector,
                              load_decode_config, make_decode_layer,
                              save_decode_config)
from serving.export import (check_core_ops, export_detector,
                            export_saved_model, export_tflite, graph_ops)
from serving.predict import parse_rest_response, rest_request

# `serving.export.export` and `serving.predict.predict` stay in their modules:
# the module names are the `python -m serving` commands.
