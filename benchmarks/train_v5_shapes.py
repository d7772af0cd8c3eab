"""Trains the small YOLOv5-style model on the shapes dataset; reports mAP.

    .venv/bin/python benchmarks/train_v5_shapes.py            # a few minutes on 2 idle cores
    .venv/bin/python benchmarks/train_v5_shapes.py --epochs 1 --train-images 64   # smoke run

`model.fit` with `YoloV5Loss` (ultralytics' objective; gains scaled by
`scale_hyperparameters` for 3 levels, the class count and the image size,
as ultralytics' train.py does) on `keras_yolo.data.shapes` with horizontal
flips, then `YoloV5Decode`, `keras_yolo.postprocess.non_max_suppression`
(ultralytics' val.py settings: conf 0.001, IoU 0.6) and COCO mAP
(`keras_yolo.metrics.evaluate`: mAP@0.5 and mAP@0.5:0.95) on held-out
images of another seed. The anchors are yolov5's P3-P5 anchors scaled from
416 to the input size (the objects of the shapes task span 3% to 60% of the
image). Prints one JSON line with the settings, the wall time and the
metrics, and writes it to `--output` when given.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_yolo.anchors import YOLOV5_ANCHORS  # noqa: E402
from keras_yolo.layers import YoloV5Decode  # noqa: E402
from keras_yolo.losses import YoloV5Loss, scale_hyperparameters  # noqa: E402
from keras_yolo.models.small_v5 import small_v5  # noqa: E402
from shapes_common import (FORMAT, compile_cosine_adam, evaluate,  # noqa: E402
                           load_shapes, report, training_batches)

ANCHOR_REFERENCE_SIZE = 416  # input size the v3/v5 COCO anchors suit best
# ultralytics val.py: every detection above 0.001, NMS IoU 0.6.
EVAL_IOU_THRES = 0.6
EVAL_MAX_DET = 100


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--val-images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the JSON result here")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)

    train, val, data_seconds = load_shapes(args)

    anchors = (np.array(YOLOV5_ANCHORS, np.float32) * args.image_size
               / ANCHOR_REFERENCE_SIZE).tolist()
    model = small_v5(args.num_classes, input_size=args.image_size)
    gains = scale_hyperparameters(num_levels=3, num_classes=args.num_classes,
                                  image_size=args.image_size)
    loss = YoloV5Loss(args.num_classes, anchors=anchors,
                      bounding_box_format=FORMAT, **gains)
    steps = compile_cosine_adam(model, loss, args)
    train_ds = training_batches(train, args)
    start = time.time()
    history = model.fit(train_ds, epochs=args.epochs, verbose=2)
    train_seconds = time.time() - start

    decode = YoloV5Decode(anchors=anchors, bounding_box_format=FORMAT)
    metrics = evaluate(model, decode, val.batch(64), args.num_classes,
                       iou_thres=EVAL_IOU_THRES, max_det=EVAL_MAX_DET)
    result = dict(
        settings=vars(args), gains=gains, data_seconds=round(data_seconds, 1),
        train_seconds=round(train_seconds, 1), steps=steps,
        parameters=model.count_params(),
        final_loss=float(history.history["loss"][-1]),
        map50=metrics["map50"], map=metrics["map"],
        mar_100=metrics["mar_100"], cpu_count=os.cpu_count(),
        load_average=os.getloadavg()[0])
    report(result, args.output)
    return result


if __name__ == "__main__":
    main()
