"""Detectors: `YoloModel` and the builders of each version."""

from keras_yolo.models.yolo_model import YoloModel
