"""Import of darknet .cfg/.weights and ultralytics yolov5 checkpoints."""
from keras_yolo.weights.darknet import (  # noqa: F401
    darknet_decode_config, load_darknet, make_decoder, parse_cfg)
from keras_yolo.weights.yolov5 import (  # noqa: F401
    export_yolov5_npz, load_yolov5, load_yolov5_weights, make_yolov5_decoder)
from keras_yolo.weights.yolov8 import load_yolov8, load_yolov8_weights  # noqa: F401
