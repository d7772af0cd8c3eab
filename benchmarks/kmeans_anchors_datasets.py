"""YOLOv2 dimension clusters on the shipped datasets, against the default anchors.

    .venv/bin/python benchmarks/kmeans_anchors_datasets.py [--output result.json]

For coco128 and raccoon (`/work/shared/datasets`, YOLO txt labels) and the
synthetic shapes set, box sizes are taken at YOLOv2's 416 x 416 input (the
relative sizes times 416, as darknet stretches images to the network size),
clustered by `keras_yolo.anchors.kmeans_anchors` (1 - IoU distance, seed 0)
for k = 5 and k = 9, and each set of anchors is scored by the mean over
boxes of the best IoU (YOLO9000's Table 1 "Avg IOU"). The default anchors
(YOLOv2 VOC and COCO, 5 each; YOLOv3's 9) are scored the same way. Prints a
table and one JSON line.
"""

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from keras_yolo import anchors as anchor_ops  # noqa: E402

DATASETS = os.environ.get("KERAS_YOLO_DATASETS", "/work/shared/datasets")
NETWORK_SIZE = 416  # YOLOv2's training resolution; the default anchors' scale


def yolo_label_sizes(pattern):
    """`(N, 2)` relative (w, h) of every box in YOLO txt files."""
    sizes = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) == 5:
                    sizes.append((float(fields[3]), float(fields[4])))
    return np.asarray(sizes, np.float64).reshape(-1, 2)


def shapes_sizes(num_images=1024):
    from keras_yolo.data import generate
    size = 320
    _, gt = generate(num_images, image_size=size, num_classes=3)
    real = gt["labels"] >= 0
    boxes = gt["boxes"][real]
    return (boxes[:, 2:] - boxes[:, :2]) / size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sets = {
        "coco128": yolo_label_sizes(
            os.path.join(DATASETS, "coco128/labels/*/*.txt")),
        "raccoon": yolo_label_sizes(os.path.join(DATASETS, "raccoon/labels/*.txt")),
        "shapes": shapes_sizes(),
    }
    defaults = {
        "yolov2_voc (5)": anchor_ops.YOLOV2_VOC_ANCHORS,
        "yolov2_coco (5)": anchor_ops.YOLOV2_COCO_ANCHORS,
        "yolov3 (9)": anchor_ops.YOLOV3_ANCHORS,
    }
    results = {}
    for name, rel in sets.items():
        sizes = rel[(rel > 0).all(1)] * NETWORK_SIZE
        entry = {"boxes": int(len(sizes))}
        for k in (5, 9):
            found, mean_iou = anchor_ops.kmeans_anchors(sizes, k, seed=args.seed)
            entry[f"kmeans_{k}"] = {"mean_iou": round(mean_iou, 4),
                                    "anchors": np.round(found, 1).tolist()}
        for label, anchors in defaults.items():
            entry[label] = round(anchor_ops.mean_best_iou(sizes, anchors), 4)
        results[name] = entry
    columns = ["kmeans_5", "kmeans_9", *defaults]
    print(f"{'dataset':10s} {'boxes':>6s} " + " ".join(f"{c:>16s}" for c in columns))
    for name, entry in results.items():
        values = [entry[c]["mean_iou"] if isinstance(entry[c], dict) else entry[c]
                  for c in columns]
        print(f"{name:10s} {entry['boxes']:6d} "
              + " ".join(f"{v:16.4f}" for v in values))
    for name, entry in results.items():
        print(f"{name} k=5 anchors at {NETWORK_SIZE}: {entry['kmeans_5']['anchors']}")
    line = json.dumps(results)
    print(line)
    if args.output:
        with open(args.output, "w") as f:
            f.write(line + "\n")
    return results


if __name__ == "__main__":
    main()
