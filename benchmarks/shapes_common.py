"""What the shapes training benchmarks share: data, optimizer, evaluation, report."""

import json
import time

import keras
import tensorflow as tf

from keras_yolo.data import shapes
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


def load_shapes(args, cache_val=False):
    """Training and held-out shapes (another seed); returns them and seconds."""
    start = time.time()
    train = shapes(args.train_images, args.image_size, args.num_classes,
                   seed=args.seed, bounding_box_format=FORMAT).cache()
    val = shapes(args.val_images, args.image_size, args.num_classes,
                 seed=args.seed + 1000, bounding_box_format=FORMAT)
    if cache_val:
        val = val.cache()
    return train, val, time.time() - start


def training_batches(train, args, augment=None):
    """Shuffled, flipped (then `augment`ed) batches of `args.batch_size`."""
    ds = (train.shuffle(args.train_images, seed=args.seed)
          .map(flip, num_parallel_calls=tf.data.AUTOTUNE))
    if augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return (ds.batch(args.batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def compile_cosine_adam(model, loss, args, jit_compile=True):
    """Adam with cosine decay over the whole run; returns the step count."""
    steps = args.epochs * (args.train_images // args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        args.learning_rate, decay_steps=steps, alpha=0.05)
    model.compile(keras.optimizers.Adam(schedule), loss=loss,
                  jit_compile=jit_compile)
    return steps


def report(result, output=None):
    """Prints the result as one JSON line and writes it to `output`."""
    line = json.dumps(result)
    print(line)
    if output:
        with open(output, "w") as f:
            f.write(line + "\n")
