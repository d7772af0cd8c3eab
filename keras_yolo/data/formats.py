"""Readers and writers for YOLO txt and COCO JSON datasets.

YOLO txt: one image file and one `labels/<stem>.txt` per image; each line is
`class cx cy w h` in fractions of the image (`rel_center_xywh`), and
`classes.txt` names the classes. COCO JSON: `images`, `annotations` with
`bbox = [x, y, w, h]` in pixels (`xywh`) and `categories`.

Both readers return `(image_paths, {"boxes", "labels"})` padded to
`max_boxes` in `xyxy` pixels, and raise errors naming the file, the line and
the field of a bad row.
"""

import json
import os

import numpy as np
from PIL import Image

from keras_yolo.data.groundtruth import GroundTruthError, pad


def _real_rows(gt, i):
    keep = np.asarray(gt["labels"][i]) >= 0
    return np.asarray(gt["boxes"][i])[keep], np.asarray(gt["labels"][i])[keep]


def write_yolo(directory, images, gt, class_names):
    """Writes `images` (N, H, W, 3) uint8 and `xyxy` pixel ground truth."""
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    os.makedirs(os.path.join(directory, "labels"), exist_ok=True)
    with open(os.path.join(directory, "classes.txt"), "w") as f:
        f.write("\n".join(class_names) + "\n")
    for i, image in enumerate(images):
        stem = f"{i:06d}"
        Image.fromarray(image).save(os.path.join(directory, "images", stem + ".png"))
        height, width = image.shape[:2]
        boxes, labels = _real_rows(gt, i)
        with open(os.path.join(directory, "labels", stem + ".txt"), "w") as f:
            for (x1, y1, x2, y2), label in zip(boxes, labels):
                f.write(
                    f"{label} {(x1 + x2) / 2 / width:.8f} {(y1 + y2) / 2 / height:.8f} "
                    f"{(x2 - x1) / width:.8f} {(y2 - y1) / height:.8f}\n"
                )


def read_yolo(directory, max_boxes, num_classes=None):
    """Reads a YOLO txt dataset; boxes come back as `xyxy` pixels."""
    image_dir = os.path.join(directory, "images")
    paths = sorted(
        os.path.join(image_dir, n) for n in os.listdir(image_dir)
        if n.lower().endswith((".png", ".jpg", ".jpeg", ".bmp"))
    )
    all_boxes, all_labels = [], []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        label_path = os.path.join(directory, "labels", stem + ".txt")
        with Image.open(path) as im:
            width, height = im.size
        boxes, labels = [], []
        if os.path.exists(label_path):
            with open(label_path) as f:
                for line_no, line in enumerate(f, 1):
                    fields = line.split()
                    if not fields:
                        continue
                    where = f"{label_path}:{line_no}"
                    if len(fields) != 5:
                        raise GroundTruthError(
                            f"{where}: expected 'class cx cy w h', got {line.strip()!r}."
                        )
                    try:
                        label = int(fields[0])
                        cx, cy, w, h = map(float, fields[1:])
                    except ValueError:
                        raise GroundTruthError(
                            f"{where}: fields are not numbers: {line.strip()!r}."
                        ) from None
                    for name, value in (("cx", cx), ("cy", cy), ("w", w), ("h", h)):
                        if not np.isfinite(value) or value < 0 or value > 1.0 + 1e-6:
                            raise GroundTruthError(
                                f"{where}: field '{name}' = {value} is outside [0, 1]."
                            )
                    if label < 0 or (num_classes is not None and label >= num_classes):
                        raise GroundTruthError(
                            f"{where}: field 'class' = {label} is outside [0, {num_classes})."
                        )
                    boxes.append([(cx - w / 2) * width, (cy - h / 2) * height,
                                  (cx + w / 2) * width, (cy + h / 2) * height])
                    labels.append(label)
        all_boxes.append(boxes)
        all_labels.append(labels)
    return paths, pad(all_boxes, all_labels, max_boxes, source=directory)


def write_coco(path, images, gt, class_names, image_dir=None):
    """Writes COCO JSON (and, with `image_dir`, the images as PNG)."""
    out = {"images": [], "annotations": [], "categories": [
        {"id": i, "name": n} for i, n in enumerate(class_names)]}
    if image_dir:
        os.makedirs(image_dir, exist_ok=True)
    for i, image in enumerate(images):
        name = f"{i:06d}.png"
        if image_dir:
            Image.fromarray(image).save(os.path.join(image_dir, name))
        out["images"].append({"id": i, "file_name": name,
                              "height": int(image.shape[0]),
                              "width": int(image.shape[1])})
        boxes, labels = _real_rows(gt, i)
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            out["annotations"].append({
                "id": len(out["annotations"]) + 1, "image_id": i,
                "category_id": int(label),
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0,
            })
    with open(path, "w") as f:
        json.dump(out, f)


def read_coco(path, max_boxes, image_dir=None):
    """Reads COCO JSON; category ids are mapped to 0..C-1 in sorted order.

    Returns `(image_paths, gt, class_names)` with `xyxy` pixel boxes.
    """
    with open(path) as f:
        data = json.load(f)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise GroundTruthError(f"{path}: missing field '{key}'.")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    per_image = {im["id"]: ([], []) for im in data["images"]}
    for ann in data["annotations"]:
        where = f"{path}: annotation id {ann.get('id')}"
        if ann.get("image_id") not in per_image:
            raise GroundTruthError(f"{where}: field 'image_id' = {ann.get('image_id')} names no image.")
        if ann.get("category_id") not in index:
            raise GroundTruthError(f"{where}: field 'category_id' = {ann.get('category_id')} names no category.")
        x, y, w, h = ann["bbox"]
        if not all(np.isfinite([x, y, w, h])) or w < 0 or h < 0:
            raise GroundTruthError(f"{where}: field 'bbox' = {ann['bbox']} is not a valid [x, y, w, h].")
        boxes, labels = per_image[ann["image_id"]]
        boxes.append([x, y, x + w, y + h])
        labels.append(index[ann["category_id"]])
    ids = [im["id"] for im in data["images"]]
    base = image_dir or os.path.dirname(path)
    paths = [os.path.join(base, im["file_name"]) for im in data["images"]]
    gt = pad([per_image[i][0] for i in ids], [per_image[i][1] for i in ids],
             max_boxes, source=path)
    return paths, gt, [c["name"] for c in categories]
