"""Trains the small CSP/Mish/SPP/PAN model on shapes with the v4 and the v3 objective; reports mAP.

    .venv/bin/python benchmarks/train_v4_shapes.py          # two runs of ~10 minutes on 2 idle cores
    .venv/bin/python benchmarks/train_v4_shapes.py --epochs 1 --train-images 64   # smoke run

The same model (`keras_yolo.models.small_v4`, same initial weights), data
(`keras_yolo.data.shapes` with horizontal flips, the same order), optimizer
and number of steps, trained once with `YoloV4Loss` (CIoU, several anchors per
truth, grid-sensitivity `scale_x_y`; `--darknet-compat` for AlexeyAB's
gradients) and once with `YoloV3Loss` (the seed's v3 objective). Each model
is decoded as it was trained (v4: `YoloV4Decode` with `scale_x_y`; v3:
`YoloV3Decode`), then `keras_yolo.postprocess.non_max_suppression` and COCO
mAP (`keras_yolo.metrics.evaluate`: mAP@0.5 and mAP@0.5:0.95) on held-out
images of another seed. Anchors: yolov4.cfg's nine scaled from 608 to the
input size. Prints one JSON line with both results, their ratio and the
wall times, and writes it to `--output` when given.

Measured (`--epochs 15`, 480 steps each, 128 px, 1024 training and 256
held-out images, seed 0, 2 cores shared with other jobs at load ~13):
v4 objective mAP@0.5 0.094, mAP@0.5:0.95 0.020 (2077 s); v3 objective
mAP@0.5 0.068, mAP@0.5:0.95 0.017 (1930 s): ratios 1.38 and 1.20. One seed of
an under-trained model: a direction, not a margin.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_yolo.anchors import YOLOV4_ANCHORS  # noqa: E402
from keras_yolo.layers import YoloV3Decode, YoloV4Decode  # noqa: E402
from keras_yolo.losses import YoloV3Loss, YoloV4Loss  # noqa: E402
from keras_yolo.models.small_v4 import small_v4  # noqa: E402
from shapes_common import (FORMAT, compile_cosine_adam, evaluate,  # noqa: E402
                           load_shapes, report, training_batches)

REFERENCE_SIZE = 608  # the input size yolov4.cfg's anchors were fitted at


def train_one(objective, args, anchors, train, val, initial_weights):
    keras.utils.set_random_seed(args.seed)  # same data order and flips
    model = small_v4(args.num_classes, input_shape=(args.image_size, args.image_size, 3))
    model.set_weights(initial_weights)
    if objective == "v4":
        loss = YoloV4Loss(args.num_classes, anchors=anchors, bounding_box_format=FORMAT,
                          darknet_compat=args.darknet_compat)
        decode = YoloV4Decode(anchors=anchors, bounding_box_format=FORMAT)
    else:
        loss = YoloV3Loss(args.num_classes, anchors=anchors, bounding_box_format=FORMAT)
        decode = YoloV3Decode(anchors=anchors, bounding_box_format=FORMAT)
    steps = compile_cosine_adam(model, loss, args, jit_compile=args.jit)
    train_ds = training_batches(train, args)
    start = time.time()
    history = model.fit(train_ds, epochs=args.epochs, verbose=2)
    seconds = time.time() - start
    metrics = evaluate(model, decode, val.batch(64), args.num_classes)
    return dict(train_seconds=round(seconds, 1), steps=steps,
                final_loss=float(history.history["loss"][-1]),
                map50=metrics["map50"], map=metrics["map"], mar_100=metrics["mar_100"])


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
    parser.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the JSON result here")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)

    train, val, data_seconds = load_shapes(args, cache_val=True)
    anchors = (np.array(YOLOV4_ANCHORS, np.float32) * args.image_size / REFERENCE_SIZE).tolist()
    model = small_v4(args.num_classes, input_shape=(args.image_size, args.image_size, 3))
    initial_weights = model.get_weights()
    results = {objective: train_one(objective, args, anchors, train, val, initial_weights)
               for objective in ("v4", "v3")}
    result = dict(
        settings=vars(args), data_seconds=round(data_seconds, 1),
        parameters=model.count_params(), v4=results["v4"], v3=results["v3"],
        map50_ratio_v4_over_v3=results["v4"]["map50"] / max(results["v3"]["map50"], 1e-9),
        map_ratio_v4_over_v3=results["v4"]["map"] / max(results["v3"]["map"], 1e-9),
        cpu_count=os.cpu_count(), load_average=os.getloadavg()[0])
    report(result, args.output)
    return result


if __name__ == "__main__":
    main()
