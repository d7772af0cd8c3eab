"""keras-yolo: the YOLO v1 to v5 objectives and head decodings for Keras 3."""

from keras_yolo import anchors, boxes, data, layers, losses, metrics, models, postprocess

__version__ = "0.1.0"
