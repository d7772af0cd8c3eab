"""Datasets: the synthetic shapes task, YOLO txt / COCO JSON I/O, ground-truth padding."""

from keras_yolo.data.formats import read_coco, read_yolo, write_coco, write_yolo
from keras_yolo.data.groundtruth import GroundTruthError, pad, validate
from keras_yolo.data.shapes import CLASS_NAMES, generate, shapes
