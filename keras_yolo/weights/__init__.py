"""Import of darknet .cfg/.weights and ultralytics yolov5 checkpoints."""
from keras_yolo.weights.darknet import darknet_decode_config, load_darknet, make_decoder, parse_cfg  # noqa: F401
from keras_yolo.weights.yolov5 import export_yolov5_npz, load_yolov5, make_yolov5_decoder  # noqa: F401
