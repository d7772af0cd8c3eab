"""Datasets: readers of YOLO txt / ultralytics YAML / COCO JSON / Pascal VOC,
the streaming `load` pipeline, letterbox and its inverse, the synthetic
shapes task, ground-truth padding and checks, and `plot_batch`."""

from keras_yolo.data.formats import read_coco, read_yolo, write_coco, write_yolo
from keras_yolo.data.groundtruth import GroundTruthError, pad, validate
from keras_yolo.data.letterbox import letterbox, letterbox_boxes, unletterbox_boxes
from keras_yolo.data.pipeline import load
from keras_yolo.data.plot import plot_batch
from keras_yolo.data.shapes import CLASS_NAMES, generate, shapes
from keras_yolo.data.sources import DataError, Records, describe, read
