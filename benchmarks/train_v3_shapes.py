"""Trains the small three-scale YOLOv3 model on the shapes dataset; reports mAP.

    .venv/bin/python benchmarks/train_v3_shapes.py            # a few minutes on 2 idle cores
    .venv/bin/python benchmarks/train_v3_shapes.py --epochs 1 --train-images 64   # smoke run

`model.fit` with `YoloV3Loss` (the seed's objective; `--darknet-compat`
trains darknet's [yolo] variant, `--coord-iou-gate none` drops the seed's
IoU indicator on the coordinate term) on `keras_yolo.data.shapes` with
horizontal flips, then `YoloV3Decode`, `keras_yolo.postprocess.
non_max_suppression` and COCO mAP (`keras_yolo.metrics.evaluate`:
mAP@0.5 and mAP@0.5:0.95) on held-out images of another seed. The anchors
are darknet's nine COCO anchors scaled from 416 to the input size. Prints
one JSON line with the settings, the wall time and the metrics, and writes
it to `--output` when given.

Measured (defaults: 128 px, 1024 images, 20 epochs = 640 steps of 32, seed 0,
256 held-out images; 2 cores shared with other jobs, load 9-20, so 22-35 min):

    objective                                   mAP@0.5   mAP@0.5:0.95
    seed (default, coord_iou_gate="anchor")      0.213      0.069
    seed, --coord-iou-gate none                  0.247      0.081
    --darknet-compat                             0.438      0.172

The seed's squared error on t_x = logit(x - c_x) (steep near cell edges)
learns centres more slowly than darknet's (t_x - logistic(t̂_x)) delta.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_yolo.anchors import YOLOV3_ANCHORS  # noqa: E402
from keras_yolo.layers import YoloV3Decode  # noqa: E402
from keras_yolo.losses import YoloV3Loss  # noqa: E402
from keras_yolo.models.small_v3 import small_v3  # noqa: E402
from shapes_common import (FORMAT, compile_cosine_adam, evaluate,  # noqa: E402
                           load_shapes, report, training_batches)

REFERENCE_SIZE = 416  # the input size darknet's COCO anchors were fitted at


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--val-images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--darknet-compat", action="store_true")
    parser.add_argument("--coord-iou-gate", default="anchor",
                        choices=["anchor", "prediction", "none"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the JSON result here")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)

    train, val, data_seconds = load_shapes(args)

    anchors = (np.array(YOLOV3_ANCHORS, np.float32)
               * args.image_size / REFERENCE_SIZE).tolist()
    model = small_v3(args.num_classes, input_size=args.image_size)
    gate = None if args.coord_iou_gate == "none" else args.coord_iou_gate
    loss = YoloV3Loss(args.num_classes, anchors=anchors,
                      bounding_box_format=FORMAT, coord_iou_gate=gate,
                      darknet_compat=args.darknet_compat)
    steps = compile_cosine_adam(model, loss, args)
    train_ds = training_batches(train, args)
    start = time.time()
    history = model.fit(train_ds, epochs=args.epochs, verbose=2)
    train_seconds = time.time() - start

    decode = YoloV3Decode(anchors=anchors, bounding_box_format=FORMAT)
    metrics = evaluate(model, decode, val.batch(64), args.num_classes)
    result = dict(
        settings=vars(args), data_seconds=round(data_seconds, 1),
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
