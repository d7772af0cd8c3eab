"""Detectors: `YoloModel` and the builders of each version."""

from keras_yolo.models.yolo_model import YoloModel
from keras_yolo.models.builders import available_models, build, model_spec
from keras_yolo.models.common import shapes_only
from keras_yolo.models.flops import flops
from keras_yolo.models.yolov1 import yolov1
from keras_yolo.models.yolov2 import yolov2, yolov2_tiny
from keras_yolo.models.yolov3 import darknet53, yolov3, yolov3_tiny
from keras_yolo.models.yolov4 import cspdarknet53, yolov4, yolov4_tiny
from keras_yolo.models.yolov5 import yolov5
from keras_yolo.models.darknet_order import darknet_layer_names
from keras_yolo.models.small_v4 import small_v4
from keras_yolo.models.yolov8 import yolov8, yolov8_size
