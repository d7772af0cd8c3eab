"""Trains the small YOLOv2-style model on the shapes dataset and reports mAP@0.5.

    .venv/bin/python benchmarks/train_v2_shapes.py            # a few minutes on 2 idle cores
    .venv/bin/python benchmarks/train_v2_shapes.py --darknet-compat
    .venv/bin/python benchmarks/train_v2_shapes.py --epochs 2 --train-images 128   # smoke run

Anchors are YOLOv2's dimension clusters (`keras_yolo.anchors.kmeans_anchors`,
k = 5) of the training boxes in pixels. `model.fit` with `YoloV2Loss` (the
seed's objective; `--darknet-compat` trains darknet's `[region]` variant,
whose anchor prior term is on for the first 12800 images) on
`keras_yolo.data.shapes` with horizontal flips, then `YoloV2Decode`,
`keras_yolo.postprocess.non_max_suppression` and COCO mAP
(`keras_yolo.metrics.evaluate`) on held-out images of another seed. Prints
one JSON line with the settings, the wall time and the metrics, and writes
it to `--output` when given.

Measured (2 shared cores, `--image-size 192 --train-images 768 --epochs 20`,
960 steps, k-means anchors mean IoU 0.604, 256 held-out images):
seed objective mAP@0.5 0.104 (mAP 0.034); seed with `--ignore-thresh 0.6`
0.129 (0.041); `--darknet-compat` 0.380 (0.139).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_yolo import anchors as anchor_ops  # noqa: E402
from keras_yolo.layers import YoloV2Decode  # noqa: E402
from keras_yolo.losses import YoloV2Loss  # noqa: E402
from keras_yolo.models.small_v2 import small_v2  # noqa: E402
from shapes_common import (FORMAT, compile_cosine_adam, evaluate,  # noqa: E402
                           load_shapes, report, training_batches)


def training_box_sizes(dataset, image_size):
    """`(N, 2)` pixel sizes of every real training box."""
    sizes = []
    for _, y in dataset.batch(256):
        real = y["labels"].numpy() >= 0
        sizes.append(y["boxes"].numpy()[real][:, 2:] * image_size)
    return np.concatenate(sizes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--val-images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--num-anchors", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--darknet-compat", action="store_true")
    parser.add_argument("--ignore-thresh", type=float, default=None,
                        help="seed mode: no noobj loss above this IoU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the JSON result here")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)

    train, val, data_seconds = load_shapes(args)
    start = time.time()
    sizes = training_box_sizes(train, args.image_size)
    anchors, anchor_iou = anchor_ops.kmeans_anchors(sizes, args.num_anchors,
                                                    seed=args.seed)
    data_seconds += time.time() - start

    model = small_v2(args.num_classes, args.num_anchors, args.image_size)
    loss = YoloV2Loss(args.num_classes, anchors=[anchors],
                      bounding_box_format=FORMAT, ignore_thresh=args.ignore_thresh,
                      darknet_compat=args.darknet_compat)
    steps = compile_cosine_adam(model, loss, args)
    train_ds = training_batches(train, args)
    start = time.time()
    history = model.fit(train_ds, epochs=args.epochs, verbose=2)
    train_seconds = time.time() - start

    decode = YoloV2Decode(anchors=[anchors], bounding_box_format=FORMAT)
    metrics = evaluate(model, decode, val.batch(64), args.num_classes)
    result = dict(
        settings=vars(args), anchors=np.round(anchors, 1).tolist(),
        anchor_mean_iou=round(anchor_iou, 4),
        data_seconds=round(data_seconds, 1),
        train_seconds=round(train_seconds, 1), steps=steps,
        images_seen=int(loss.seen.numpy()),
        final_loss=float(history.history["loss"][-1]),
        map50=metrics["map50"], map=metrics["map"],
        mar_100=metrics["mar_100"], cpu_count=os.cpu_count())
    report(result, args.output)
    return result


if __name__ == "__main__":
    main()
