"""Readers and writers for YOLO txt and COCO JSON datasets.

YOLO txt: one image file and one `labels/<stem>.txt` per image; each line is
`class cx cy w h` in fractions of the image (`rel_center_xywh`), and
`classes.txt` names the classes. COCO JSON: `images`, `annotations` with
`bbox = [x, y, w, h]` in pixels (`xywh`) and `categories`.

Both readers return `(image_paths, {"boxes", "labels"})` padded to
`max_boxes` in `xyxy` pixels; they are `keras_yolo.data.sources`' readers
(whose errors name the file, the line or annotation id, the field and the
value) followed by `pad`.
"""

import json
import os

import numpy as np
from PIL import Image

from keras_yolo.data import sources
from keras_yolo.data.groundtruth import pad


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
    """Reads a YOLO txt folder (`keras_yolo.data.sources.read_yolo_folder`,
    its checks and errors); boxes come back as padded `xyxy` pixels.

    Returns `(image_paths, {"boxes": (N, M, 4), "labels": (N, M)})`.
    """
    records = sources.read_yolo_folder(directory, num_classes=num_classes)
    return records.image_paths, pad(records.boxes, records.labels,
                                    max_boxes, source=directory)


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
    """Reads COCO JSON (`keras_yolo.data.sources.read_coco_json`, its checks
    and errors); category ids map to 0..C-1 in ascending order, `iscrowd`
    regions are left out.

    Returns `(image_paths, gt, class_names)` with padded `xyxy` pixel boxes.
    """
    records = sources.read_coco_json(path, image_dir)
    return (records.image_paths,
            pad(records.boxes, records.labels, max_boxes, source=path),
            records.class_names)
