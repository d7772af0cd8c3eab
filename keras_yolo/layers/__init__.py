"""Keras layers: head decoding per version and the blocks the models use."""
from keras_yolo.layers.yolo_v1_decode import YoloV1Decode
from keras_yolo.layers.yolo_v2_decode import YoloV2Decode
from keras_yolo.postprocess import NonMaxSuppression
from keras_yolo.layers.yolo_v5_decode import YoloV5Decode
from keras_yolo.layers.yolo_v3_decode import YoloV3Decode
from keras_yolo.layers.yolo_v4_decode import YoloV4Decode
