"""What the shapes training benchmarks share: augmentation and evaluation."""

import tensorflow as tf

from keras_yolo.metrics import evaluate as evaluate_detector
from keras_yolo.postprocess import non_max_suppression

FORMAT = "rel_center_xywh"
# mAP is measured on (almost) every detection, as COCO evaluation does.
EVAL_CONF_THRES = 0.001


def flip(image, y):
    """Random horizontal flip of an image and its rel_center_xywh boxes."""
    do = tf.random.uniform(()) < 0.5
    image = tf.where(do, image[:, ::-1], image)
    x, rest = y["boxes"][:, :1], y["boxes"][:, 1:]
    boxes = tf.where(do, tf.concat([1.0 - x, rest], -1), y["boxes"])
    boxes = tf.where(y["labels"][:, None] >= 0, boxes, 0.0)
    return image, {"boxes": boxes, "labels": y["labels"]}


def evaluate(model, decode, dataset, num_classes, iou_thres=0.5, max_det=100):
    """COCO mAP of `model` + `decode` + NMS over a batched shapes dataset."""

    def detector(images):
        return non_max_suppression(
            decode(model(images, training=False)), conf_thres=EVAL_CONF_THRES,
            iou_thres=iou_thres, max_det=max_det, bounding_box_format=FORMAT)

    return evaluate_detector(detector, dataset, FORMAT, num_classes=num_classes,
                             max_detections=max_det)
