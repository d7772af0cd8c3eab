"""Regions kept out of the targets (COCO crowd, VOC difficult) travel from
each format of the shipped datasets to the evaluator, which ignores them as
pycocotools does on the original COCO JSON."""

import contextlib
import io
import json
import os

import numpy as np
import pytest

from keras_yolo import data, metrics

DATASETS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                        "datasets")
COCO128 = os.path.join(DATASETS, "coco128")
RACCOON = os.path.join(DATASETS, "raccoon")
ORIGINAL = os.path.join(COCO128, "annotations",
                        "instances_coco128_original.json")


def _need(path):
    if not os.path.exists(path):
        pytest.skip(f"shipped dataset {path} missing")
    return path


def _counts(records):
    return (sum(len(b) for b in records.ignored),
            sum(len(b) for b in records.ignored_labels))


def test_raccoon_difficult_and_crowd_counts_agree_across_formats():
    # The README: every XML object has difficult=0, every JSON one
    # iscrowd=0, and YOLO txt has no such flag: none anywhere.
    _need(RACCOON)
    for split in ("train", "test"):
        assert _counts(data.read(RACCOON, split)) == (0, 0)
        assert _counts(data.read(RACCOON, split, format="yolo",
                                 class_names=["raccoon"])) == (0, 0)
    assert _counts(data.read(os.path.join(RACCOON, "instances_raccoon.json"),
                             images_dir=os.path.join(RACCOON, "images"))
                   ) == (0, 0)


def test_coco128_crowd_regions_agree_with_the_json():
    _need(COCO128)
    images = os.path.join(COCO128, "images", "train2017")
    with open(ORIGINAL) as f:
        content = json.load(f)
    crowd = [a for a in content["annotations"] if a.get("iscrowd")]
    assert len(crowd) == 10
    original = data.read(ORIGINAL, images_dir=images)
    assert _counts(original) == (10, 10)
    # The converted JSON and the YOLO labels carry no crowd regions (the
    # README: they hold the 929 non-crowd boxes only).
    assert _counts(data.read(os.path.join(
        COCO128, "annotations", "instances_coco128.json"),
        images_dir=images)) == (0, 0)
    assert _counts(data.read(os.path.join(COCO128, "coco128.yaml"),
                             "val")) == (0, 0)
    # Each region, with its class, as the JSON writes it.
    ids = sorted(c["id"] for c in content["categories"])
    by_file = {os.path.basename(p): (b, l) for p, b, l in zip(
        original.image_paths, original.ignored, original.ignored_labels)}
    files = {im["id"]: im["file_name"] for im in content["images"]}
    for ann in crowd:
        boxes, labels = by_file[files[ann["image_id"]]]
        x, y, w, h = ann["bbox"]
        row = np.flatnonzero(np.abs(boxes - [x, y, x + w, y + h]).max(1)
                             < 1e-3)
        assert len(row) == 1
        assert labels[row[0]] == ids.index(ann["category_id"])


def test_coco128_map_with_crowd_regions_equals_pycocotools_on_the_json():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _need(COCO128)
    size = 640
    images = os.path.join(COCO128, "images", "train2017")
    ds = data.load(ORIGINAL, images_dir=images, image_size=size,
                   bounding_box_format="xyxy", return_ignored=True)
    records = ds.records
    with open(ORIGINAL) as f:
        content = json.load(f)
    by_file = {im["file_name"]: im["id"] for im in content["images"]}
    category_ids = sorted(c["id"] for c in content["categories"])
    # Detections in original pixels: each truth jittered, two boxes inside
    # each crowd region (of its class, scored high), and random boxes.
    rng = np.random.default_rng(0)
    per_image = []
    for boxes, labels, regions, region_labels, (height, width) in zip(
            records.boxes, records.labels, records.ignored,
            records.ignored_labels, records.image_sizes):
        rows = []
        for box, label in zip(boxes, labels):
            w, h = box[2:] - box[:2]
            jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
            rows.append((box + jitter, rng.uniform(0.2, 0.9), label))
        for box, label in zip(regions, region_labels):
            for _ in range(2):
                w, h = box[2:] - box[:2]
                x1, y1 = box[:2] + rng.uniform(0, 0.3, 2) * [w, h]
                rows.append((np.array([x1, y1, x1 + 0.5 * w, y1 + 0.5 * h]),
                             rng.uniform(0.8, 1.0), label))
        for _ in range(2):
            x1, y1 = rng.uniform(0, 0.7, 2) * [width, height]
            rows.append((np.array([x1, y1, x1 + 0.2 * width,
                                   y1 + 0.2 * height]),
                         rng.uniform(0, 1), rng.integers(0, 80)))
        per_image.append(rows)
    direct = []
    for path, rows in zip(records.image_paths, per_image):
        for box, score, label in rows:
            direct.append({"image_id": by_file[os.path.basename(path)],
                           "category_id": category_ids[int(label)],
                           "bbox": [float(box[0]), float(box[1]),
                                    float(box[2] - box[0]),
                                    float(box[3] - box[1])],
                           "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ORIGINAL)
        ev = COCOeval(gt, gt.loadRes(direct), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # The same detections letterboxed, against what load yields.
    items = list(ds.as_numpy_iterator())
    k = max(len(rows) for rows in per_image)
    y_true = {key: np.stack([y[key] for _, y in items]) for key in
              ("boxes", "labels", "ignored_boxes", "ignored_labels")}
    y_pred = {"boxes": np.zeros((len(items), k, 4), np.float32),
              "scores": np.zeros((len(items), k), np.float32),
              "classes": np.full((len(items), k), -1, np.int32),
              "num_detections": np.zeros(len(items), np.int32)}
    for i, ((height, width), rows) in enumerate(zip(records.image_sizes,
                                                    per_image)):
        r = size / max(height, width)
        new_w, new_h = round(width * r), round(height * r)
        left, top = (size - new_w) // 2, (size - new_h) // 2
        scale = [new_w / width, new_h / height] * 2
        for j, (box, score, label) in enumerate(rows):
            y_pred["boxes"][i, j] = box * scale + [left, top, left, top]
            y_pred["scores"][i, j] = score
            y_pred["classes"][i, j] = label
        y_pred["num_detections"][i] = len(rows)
    ours = metrics.coco_map(y_true, y_pred, "xyxy", num_classes=80)
    np.testing.assert_allclose(
        [ours[name] for name in ("map", "map50", "map75")], ev.stats[:3],
        atol=1e-4)
    # The regions matter here: without them the crowd detections are
    # false positives ranked near the top.
    plain = metrics.coco_map({"boxes": y_true["boxes"],
                              "labels": y_true["labels"]}, y_pred, "xyxy",
                             num_classes=80)
    assert plain["map50"] < ours["map50"] - 0.003
    assert plain["map"] < ours["map"]
