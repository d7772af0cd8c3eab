"""Readers of detection datasets on disk, before any pixel is decoded.

`read(source, split)` turns a dataset description into `Records`: the image
paths of one split, each image's boxes as `xyxy` pixels and labels, the
regions kept out of training targets, the class names and the image sizes.
Pixels are decoded later, inside `tf.data` (see `keras_yolo.data.pipeline`).

Sources (`format=None` detects them):

| format   | source                                                              |
|----------|---------------------------------------------------------------------|
| `yaml`   | an ultralytics dataset YAML: `path`, `train`, `val`, `test`, `names` (list or `{id: name}`); a split is an image folder, a list file or a glob (or a list of them); labels by the `/images/` -> `/labels/` path rule |
| `yolo`   | a folder with `images/` and `labels/` (optionally `images/<split>/`), class names in `classes.txt`, `obj.names`, a `data.yaml` or `class_names=`; `splits/<split>.txt` lists a split's images |
| `coco`   | a COCO JSON (`images_dir=` the image folder; the JSON is the split) |
| `voc`    | a Pascal VOC folder: `annotations/*.xml` (or `Annotations/`) beside `images/` (or `JPEGImages/`); `splits/<split>.txt` or `ImageSets/Main/<split>.txt`, all images when there is none |

Kept out of training targets, into `Records.ignored` (with their classes in
`Records.ignored_labels`): COCO `iscrowd=1` regions and VOC objects flagged
`difficult=1` (as ultralytics' VOC conversion does; `include_difficult=True`
keeps them as targets). `keras_yolo.data.load(..., return_ignored=True)`
carries them to `keras_yolo.metrics`, which ignores them as COCO does: a
detection matching one is neither a true nor a false positive. Their class
ids are checked like a target's; their boxes are clipped to the image.

VOC and COCO coordinates are taken as written (no 1-pixel shift of VOC's
1-based convention), so the three formats of the shipped raccoon set agree.

Bad data: a dataset-level fault (unreadable or malformed JSON/YAML, missing
top-level fields, duplicate image or category ids, no label file at all)
always raises `DataError`. A fault of one image (unreadable or truncated
file, a label row with the wrong column count, non-numbers, a class id
outside the list, a zero-size box or one outside the image, a COCO
annotation with a missing or malformed field) raises `DataError` naming the
file, the line or annotation id, the field and the value with
`on_error="raise"` (default); with `on_error="skip"` the whole image is left
out (an image with one wrong row would otherwise teach its other objects as
background) and a counted summary is logged at the end of the read.
"""

import collections
import concurrent.futures
import dataclasses
import glob
import json
import logging
import os
import xml.etree.ElementTree as ElementTree

import numpy as np
from PIL import Image

from keras_yolo.data.groundtruth import GroundTruthError, pad, validate

_logger = logging.getLogger("keras_yolo")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Image files tf.io.decode_image cannot read: listed, never silently skipped.
UNDECODABLE_SUFFIXES = (".tif", ".tiff", ".heic", ".heif", ".dng", ".mpo",
                        ".pfm", ".jp2")
# Formats tf.io.decode_image reads (GIF: its first frame).
DECODABLE = ("JPEG", "PNG", "BMP", "GIF", "WEBP")
FORMATS = ("yaml", "yolo", "coco", "voc")
ON_ERROR = ("raise", "skip")
# Box corners this many pixels outside the image are clipped (rounding of
# written coordinates); farther out is an error.
OUTSIDE_TOLERANCE = 1.0
# EXIF orientations that swap or mirror the stored pixels.
_ROTATED = (2, 3, 4, 5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


class DataError(GroundTruthError):
    """A dataset file that cannot be read as asked; the message names it."""


@dataclasses.dataclass
class Records:
    """One split of a dataset, read from its annotation files.

    Attributes:
        image_paths: list of N image file paths.
        boxes: list of N `(n_i, 4)` float32 arrays, `xyxy` pixels.
        labels: list of N `(n_i,)` int32 arrays in `[0, num_classes)`.
        ignored: list of N `(k_i, 4)` float32 arrays, `xyxy` pixels: regions
            that are not training targets (COCO crowd, VOC difficult).
        ignored_labels: list of N `(k_i,)` int32 arrays, their classes.
        image_sizes: `(N, 2)` int array of `(height, width)`.
        class_names: list of C names.
        source: the path read, for messages.
        format: one of `FORMATS`.
    """

    image_paths: list
    boxes: list
    labels: list
    ignored: list
    ignored_labels: list
    image_sizes: np.ndarray
    class_names: list
    source: str
    format: str

    def __len__(self):
        return len(self.image_paths)


class _Problems:
    """Raises on the first fault, or counts faults per kind (`skip`)."""

    def __init__(self, on_error, source):
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}; got "
                             f"{on_error!r}.")
        self.on_error, self.source = on_error, source
        self.counts = collections.Counter()
        self.first = {}

    def __call__(self, kind, message):
        if self.on_error == "raise":
            raise DataError(message + " (on_error='skip' leaves such "
                            "images out)")
        self.counts[kind] += 1
        self.first.setdefault(kind, message)

    def log_summary(self, kept, total):
        if not self.counts:
            return
        lines = [f"  {count} x {kind}, e.g. {self.first[kind]}"
                 for kind, count in self.counts.most_common()]
        _logger.warning("%s: skipped %d of %d images (on_error='skip'):\n%s",
                        self.source, total - kept, total, "\n".join(lines))


# --------------------------------------------------------------- images


def _scan_image(path):
    """`(height, width, None)` of a decodable image, or `(0, 0, reason)`."""
    try:
        with Image.open(path) as image:
            kind, (width, height), mode = image.format, image.size, \
                image.mode
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1) \
                if kind == "JPEG" else 1
            if kind == "PNG":
                image.verify()  # chunk CRCs up to IEND: catches truncation
        if kind not in DECODABLE:
            return 0, 0, (f"format {kind} is not one tf.io.decode_image "
                          f"reads ({', '.join(DECODABLE)})"), 1
        if kind == "BMP" and mode == "1":
            return 0, 0, "1-bit BMP (tf.io.decode_image reads 8/24/32)", 1
        if kind == "JPEG":
            with open(path, "rb") as f:
                f.seek(max(os.path.getsize(path) - 64, 0))
                if b"\xff\xd9" not in f.read():
                    return 0, 0, "truncated JPEG (no end-of-image marker)", 1
        if width < 1 or height < 1:
            return 0, 0, f"empty image ({width}x{height})", 1
        return height, width, None, orientation
    except FileNotFoundError:
        return 0, 0, "file not found", 1
    except Exception as error:  # noqa: BLE001 - PIL raises many kinds
        return 0, 0, f"unreadable image ({type(error).__name__}: {error})", 1


def scan_images(paths, threads=8):
    """Header check of every image (in threads): `(sizes (N, 2), reasons)`,
    `reasons[i]` None for a readable image."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(_scan_image, paths))
    sizes = np.array([(h, w) for h, w, _, _ in results], np.int64)
    sizes = sizes.reshape(len(paths), 2)
    rotated = sum(o in _ROTATED for _, _, _, o in results)
    if rotated:
        _logger.warning(
            "%d of %d images carry an EXIF rotation; they are decoded as "
            "stored (as tf.io.decode_image does) and their boxes must refer "
            "to the stored pixels.", rotated, len(paths))
    return sizes, [reason for _, _, reason, _ in results]


def list_images(directory):
    """Image files under `directory` (recursively), sorted; logs a count of
    image files in formats `tf.io` cannot decode (left out)."""
    found, other = [], []
    for root, _, names in os.walk(directory, followlinks=True):
        found += [os.path.join(root, n) for n in names
                  if n.lower().endswith(IMAGE_SUFFIXES)]
        other += [os.path.join(root, n) for n in names
                  if n.lower().endswith(UNDECODABLE_SUFFIXES)]
    if other:
        _logger.warning("%s: left out %d image files tf.io cannot decode "
                        "(e.g. %s); convert them to JPEG or PNG.", directory,
                        len(other), sorted(other)[0])
    return sorted(found)


def label_path(image_path):
    """ultralytics' rule: the last `/images/` becomes `/labels/`, the
    suffix `.txt`."""
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = image_path.rpartition(images)
    path = head + labels + tail if sep else image_path
    return os.path.splitext(path)[0] + ".txt"


# ---------------------------------------------------------- finishing


def _finish(paths, rows, ignored, class_names, source, fmt, problems,
            declared_sizes=None):
    """Scans the images, converts `rel` rows to pixels, checks every row.

    `rows[i]` is a list of `(label, box, where, relative)`; `box` is
    `xyxy` (pixels, or fractions when `relative`). `ignored[i]` (or None)
    is a list of `(label, xyxy pixels, where)` regions.
    """
    sizes, reasons = scan_images(paths)
    keep = []
    out_boxes, out_labels, out_ignored, out_ignored_labels = [], [], [], []
    num_classes = len(class_names)
    for i, path in enumerate(paths):
        if reasons[i] is not None:
            problems("unreadable image", f"{path}: {reasons[i]}")
            continue
        height, width = sizes[i]
        if declared_sizes is not None and declared_sizes[i] is not None:
            d_h, d_w, where = declared_sizes[i]
            if (d_h, d_w) != (height, width):
                problems("wrong declared size",
                         f"{where}: fields 'height', 'width' = {d_h}, {d_w} "
                         f"but the image {path} is {height}x{width}")
                continue
        boxes, labels, bad = [], [], False
        for label, box, where, relative in rows[i]:
            box = np.asarray(box, np.float64)
            if relative:
                box = box * [width, height, width, height]
            message = _check_row(label, box, width, height, num_classes)
            if message:
                problems(message[0], f"{where}: {message[1]}")
                bad = True
                break
            boxes.append(np.clip(box, 0, [width, height, width, height]))
            labels.append(label)
        regions = ignored[i] if ignored else []
        for label, box, where in [] if bad else regions:
            if not 0 <= label < num_classes:
                problems("class id outside the class list",
                         f"{where}: field 'class' = {label} is outside "
                         f"[0, {num_classes})")
                bad = True
                break
        if bad:
            continue
        keep.append(i)
        out_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        out_labels.append(np.asarray(labels, np.int32))
        region_boxes = np.asarray([box for _, box, _ in regions],
                                  np.float64).reshape(-1, 4)
        out_ignored.append(np.clip(region_boxes, 0, [width, height, width,
                                                     height]
                                   ).astype(np.float32))
        out_ignored_labels.append(np.asarray([label for label, _, _ in
                                             regions], np.int32))
    problems.log_summary(len(keep), len(paths))
    _validate(out_boxes, out_labels, sizes[keep], num_classes, source)
    return Records([paths[i] for i in keep], out_boxes, out_labels,
                   out_ignored, out_ignored_labels, sizes[keep].reshape(-1, 2),
                   list(class_names), source, fmt)


def _validate(boxes, labels, sizes, num_classes, source, chunk=4096):
    """The shared definition of a valid row (`groundtruth.validate`, as the
    losses use it), on the whole split in relative coordinates."""
    for start in range(0, len(boxes), chunk):
        block = slice(start, start + chunk)
        most = max([len(b) for b in boxes[block]] + [1])
        gt = pad(boxes[block], labels[block], most, source=source)
        scale = np.tile(sizes[block][:, ::-1], 2)[:, None, :]
        gt["boxes"] = gt["boxes"] / np.maximum(scale, 1)
        validate(gt, max(num_classes, 1), "rel_xyxy", source=source)


def _check_row(label, box, width, height, num_classes):
    """`(kind, message)` of a bad row, or None."""
    if not 0 <= label < num_classes:
        return ("class id outside the class list",
                f"field 'class' = {label} is outside [0, {num_classes})")
    if not np.all(np.isfinite(box)):
        return "non-finite coordinate", f"box {box.tolist()} is not finite"
    x1, y1, x2, y2 = box
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return ("zero-size box", f"box xyxy {_px(box)} has zero or negative "
                f"width or height ({x2 - x1:g} x {y2 - y1:g} px)")
    t = OUTSIDE_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        return ("box outside the image",
                f"box xyxy {_px(box)} lies outside the {width}x{height} "
                "image")
    return None


def _px(box):
    return "[" + ", ".join(f"{v:.1f}" for v in box) + "]"


# -------------------------------------------------------------- YOLO txt


def _parse_yolo_label(path, problems):
    """Rows of one YOLO label file: `(label, rel xyxy, where, True)`;
    None when the file is bad and skipped."""
    rows = []
    with open(path) as f:
        lines = f.read().splitlines()
    for line_no, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{line_no}"
        if len(fields) != 5:
            problems("label row with wrong column count",
                     f"{where}: expected 5 fields 'class cx cy w h', got "
                     f"{len(fields)}: {line.strip()!r}")
            return None
        names = ("class", "cx", "cy", "w", "h")
        values = []
        for name, text in zip(names, fields):
            try:
                values.append(float(text))
            except ValueError:
                problems("non-number in a label row",
                         f"{where}: field '{name}' = {text!r} is not a "
                         "number")
                return None
        label, cx, cy, w, h = values
        if label != int(label) if np.isfinite(label) else True:
            problems("non-integer class id",
                     f"{where}: field 'class' = {fields[0]!r} is not an "
                     "integer")
            return None
        for name, value in zip(names[1:], (cx, cy, w, h)):
            if not np.isfinite(value):
                problems("non-finite coordinate",
                         f"{where}: field '{name}' = {fields[names.index(name)]!r}"
                         " is not finite")
                return None
        if w <= 0 or h <= 0:
            problems("zero-size box", f"{where}: field "
                     f"'{'w' if w <= 0 else 'h'}' = {min(w, h):g}: zero-size "
                     "box")
            return None
        rows.append((int(label), [cx - w / 2, cy - h / 2, cx + w / 2,
                                  cy + h / 2], where, True))
    return rows


def _read_yolo_images(paths, class_names, source, fmt, problems):
    """YOLO labels of `paths` by the images -> labels rule."""
    rows, kept, missing = [], [], 0
    for path in paths:
        label_file = label_path(path)
        if not os.path.exists(label_file):
            missing += 1
            rows.append([])
            kept.append(path)
            continue
        parsed = _parse_yolo_label(label_file, problems)
        if parsed is None:
            continue
        rows.append(parsed)
        kept.append(path)
    if paths and missing == len(paths):
        raise DataError(
            f"{source}: none of the {len(paths)} images has a label file "
            f"(looked for e.g. {label_path(paths[0])}, by the /images/ -> "
            "/labels/ rule); a misnamed labels folder would make every image "
            "background.")
    if missing:
        _logger.warning("%s: %d of %d images have no label file: trained as "
                        "background (e.g. %s).", source, missing, len(paths),
                        label_path(next(p for p, r in zip(kept, rows)
                                        if not r)))
    return _finish(kept, rows, None, class_names, source, fmt, problems)


def _names_from_yaml_value(names, where):
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DataError(f"{where}: field 'names' keys must be class ids "
                            f"0..C-1; got {list(names)[:5]}.") from None
        if keys != list(range(len(keys))):
            raise DataError(f"{where}: field 'names' ids must be 0..C-1 "
                            f"without gaps; got {keys[:10]}.")
        lookup = {int(k): v for k, v in names.items()}
        return [str(lookup[k]) for k in keys]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    raise DataError(f"{where}: field 'names' must be a list or a mapping "
                    f"of id -> name; got {type(names).__name__}.")


def _read_names_file(directory):
    """Class names of a folder: a names file, or a dataset YAML's `names`."""
    for name in ("classes.txt", "obj.names", "classes.names", "labels.txt"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path) as f:
                return [line.strip() for line in f if line.strip()]
    for name in ("data.yaml", "dataset.yaml"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            config = _load_yaml(path)
            if "names" in config:
                return _names_from_yaml_value(config["names"], path)
    return None


def _split_list(root, split):
    """Paths (relative to `root`) listed in a split file, or None."""
    for candidate in (os.path.join(root, "splits", f"{split}.txt"),
                      os.path.join(root, "ImageSets", "Main",
                                   f"{split}.txt")):
        if os.path.exists(candidate):
            with open(candidate) as f:
                return candidate, [line.strip() for line in f
                                   if line.strip()]
    return None, None


def _split_names(root):
    names = set()
    for folder in (os.path.join(root, "splits"),
                   os.path.join(root, "ImageSets", "Main")):
        if os.path.isdir(folder):
            names |= {os.path.splitext(n)[0] for n in os.listdir(folder)
                      if n.endswith(".txt")}
    return sorted(names)


def _resolve_listed(root, entry, image_dir, list_file):
    """An entry of a split list: a path relative to the root or a stem."""
    for candidate in (os.path.join(root, entry), entry):
        if os.path.isfile(candidate):
            return candidate
    for suffix in ("",) + IMAGE_SUFFIXES + tuple(s.upper() for s in
                                                 IMAGE_SUFFIXES):
        candidate = os.path.join(image_dir, os.path.basename(entry) + suffix)
        if os.path.isfile(candidate):
            return candidate
    raise DataError(f"{list_file}: entry {entry!r} names no image (looked "
                    f"in {root} and {image_dir}).")


def read_yolo_folder(directory, split="train", class_names=None,
                     on_error="raise", num_classes=None):
    """A YOLO txt folder: `images/[<split>/]`, `labels/[<split>/]`; without
    class names (`class_names`, a names file), `num_classes` numbers them
    (else the largest id found does)."""
    problems = _Problems(on_error, directory)
    image_dir = os.path.join(directory, "images")
    if os.path.isdir(os.path.join(image_dir, split)):
        image_dir = os.path.join(image_dir, split)
    if not os.path.isdir(image_dir):
        raise DataError(f"{directory}: no images/ folder (a YOLO txt folder "
                        "holds images/ and labels/).")
    list_file, entries = _split_list(directory, split)
    if entries is not None:
        paths = [_resolve_listed(directory, e, image_dir, list_file)
                 for e in entries]
    else:
        paths = list_images(image_dir)
    names = class_names or _read_names_file(directory)
    if names is None:
        names = [str(i) for i in range(num_classes)] if num_classes \
            else _numbered_names(paths)
    return _read_yolo_images(paths, names, directory, "yolo", problems)


def _numbered_names(paths):
    """Names '0'..'K' when a YOLO folder names no classes."""
    largest = -1
    for path in paths:
        label_file = label_path(path)
        if os.path.exists(label_file):
            with open(label_file) as f:
                for line in f:
                    try:
                        largest = max(largest, int(float(line.split()[0])))
                    except (ValueError, IndexError):
                        pass
    _logger.warning("no class names (classes.txt or class_names=): naming "
                    "%d classes by their ids.", largest + 1)
    return [str(i) for i in range(largest + 1)]


# ------------------------------------------------------ ultralytics YAML


def _load_yaml(path):
    import yaml

    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML ({error}).") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a mapping with 'train', 'val' "
                        f"and 'names'; got {type(config).__name__}.")
    return config


def _yaml_root(path, config):
    root = config.get("path") or "."
    if not os.path.isabs(root):
        root = os.path.join(os.path.dirname(os.path.abspath(path)), root)
    return os.path.normpath(root)


def read_yaml(path, split="train", class_names=None, on_error="raise"):
    """An ultralytics dataset YAML (see the module docstring)."""
    config = _load_yaml(path)
    if "names" not in config and not class_names:
        raise DataError(f"{path}: missing field 'names'.")
    names = class_names or _names_from_yaml_value(config["names"], path)
    if "nc" in config and int(config["nc"]) != len(names):
        raise DataError(f"{path}: field 'nc' = {config['nc']} but 'names' "
                        f"lists {len(names)} classes.")
    if split not in config or config[split] in (None, ""):
        raise DataError(f"{path}: no split {split!r} (has "
                        f"{[k for k in ('train', 'val', 'test') if config.get(k)]}).")
    root = _yaml_root(path, config)
    entries = config[split]
    entries = entries if isinstance(entries, (list, tuple)) else [entries]
    paths = []
    for entry in entries:
        entry = str(entry)
        full = entry if os.path.isabs(entry) else os.path.join(root, entry)
        if os.path.isdir(full):
            paths += list_images(full)
        elif os.path.isfile(full) and full.endswith(".txt"):
            base = os.path.dirname(full)
            with open(full) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        paths.append(line if os.path.isabs(line) else
                                     os.path.normpath(os.path.join(
                                         base, line)))
        elif any(c in entry for c in "*?["):
            paths += sorted(p for p in glob.glob(full, recursive=True)
                            if p.lower().endswith(IMAGE_SUFFIXES))
        else:
            raise DataError(f"{path}: field '{split}' = {entry!r}: {full} "
                            "is neither an image folder, a .txt list nor a "
                            "glob that exists.")
    if not paths:
        raise DataError(f"{path}: field '{split}' = {config[split]!r} "
                        "names no images.")
    return _read_yolo_images(paths, names, path, "yaml",
                             _Problems(on_error, path))


# ------------------------------------------------------------ COCO JSON


def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: line {error.lineno} column {error.colno}: "
                        f"not valid JSON ({error.msg}).") from None


def _coco_categories(data, path):
    categories = data.get("categories")
    if not isinstance(categories, list):
        raise DataError(f"{path}: missing or malformed field 'categories' "
                        "(a list of {id, name}).")
    seen = {}
    for k, category in enumerate(categories):
        if not isinstance(category, dict) or "id" not in category:
            raise DataError(f"{path}: categories[{k}]: missing field 'id'.")
        if category["id"] in seen:
            raise DataError(f"{path}: categories[{k}]: field 'id' = "
                            f"{category['id']} repeats categories"
                            f"[{seen[category['id']]}] (labels would shift).")
        seen[category["id"]] = k
    ordered = sorted(categories, key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(ordered)}
    names = [str(c.get("name", c["id"])) for c in ordered]
    return index, names


def _coco_images_dir(path, images, images_dir):
    if images_dir:
        return images_dir
    base = os.path.dirname(os.path.abspath(path))
    candidates = [base, os.path.join(base, "images"),
                  os.path.join(os.path.dirname(base), "images")]
    for candidate in candidates:
        if images and os.path.exists(os.path.join(
                candidate, str(images[0].get("file_name", "")))):
            return candidate
    raise DataError(f"{path}: pass images_dir= (--images-dir): image "
                    f"{images[0].get('file_name') if images else None!r} is "
                    f"in none of {candidates}.")


def read_coco_json(path, images_dir=None, on_error="raise"):
    """A COCO JSON; category ids map to 0..C-1 in ascending id order."""
    problems = _Problems(on_error, path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images', "
                        "'annotations' and 'categories'.")
    index, names = _coco_categories(data, path)
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing or malformed field '{key}' "
                            "(a list).")
    images = data["images"]
    order, declared = {}, []
    for k, image in enumerate(images):
        for field in ("id", "file_name"):
            if not isinstance(image, dict) or field not in image:
                raise DataError(f"{path}: images[{k}]: missing field "
                                f"'{field}'.")
        if image["id"] in order:
            raise DataError(f"{path}: images[{k}]: field 'id' = "
                            f"{image['id']} repeats images[{order[image['id']]}]"
                            " (their boxes would merge).")
        order[image["id"]] = k
        if "height" in image and "width" in image:
            declared.append((int(image["height"]), int(image["width"]),
                             f"{path}: image id {image['id']}"))
        else:
            declared.append(None)
    rows = [[] for _ in images]
    ignored = [[] for _ in images]
    bad_images = set()
    for k, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", f"#{k}") if isinstance(ann, dict) else f"#{k}"
        where = f"{path}: annotation id {ann_id}"
        if not isinstance(ann, dict):
            problems("malformed annotation", f"{where}: not an object")
            continue
        missing = [f for f in ("image_id", "category_id", "bbox")
                   if f not in ann]
        target = order.get(ann.get("image_id"))
        if "image_id" not in missing and target is None:
            problems("annotation of an unknown image",
                     f"{where}: field 'image_id' = {ann['image_id']} names "
                     "no image")
            continue
        if missing:
            problems("annotation with a missing field",
                     f"{where}: missing field '{missing[0]}'")
            if target is not None:
                bad_images.add(target)
            continue
        bbox = ann["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(
                isinstance(v, (int, float)) for v in bbox):
            problems("bbox of the wrong length or type",
                     f"{where}: field 'bbox' = {bbox!r} is not [x, y, w, h]")
            bad_images.add(target)
            continue
        x, y, w, h = (float(v) for v in bbox)
        label = index.get(ann["category_id"], len(names))
        if ann["category_id"] not in index:
            problems("class id outside the class list",
                     f"{where}: field 'category_id' = {ann['category_id']} "
                     "names no category")
            bad_images.add(target)
            continue
        if ann.get("iscrowd", 0):
            ignored[target].append((label, [x, y, x + w, y + h], where))
            continue
        rows[target].append((label, [x, y, x + w, y + h], where, False))
    base = _coco_images_dir(path, images, images_dir)
    paths = [os.path.join(base, str(im["file_name"])) for im in images]
    keep = [k for k in range(len(images)) if k not in bad_images]
    return _finish([paths[k] for k in keep], [rows[k] for k in keep],
                   [ignored[k] for k in keep], names, path, "coco", problems,
                   declared_sizes=[declared[k] for k in keep])


# ------------------------------------------------------------ Pascal VOC


def _voc_dirs(directory):
    annotations = next((os.path.join(directory, d) for d in
                        ("annotations", "Annotations")
                        if os.path.isdir(os.path.join(directory, d))), None)
    images = next((os.path.join(directory, d) for d in
                   ("images", "JPEGImages")
                   if os.path.isdir(os.path.join(directory, d))), None)
    if annotations is None or images is None:
        raise DataError(f"{directory}: a VOC folder holds annotations/ (or "
                        "Annotations/) beside images/ (or JPEGImages/).")
    return annotations, images


def _parse_voc(xml_path):
    """`(filename, (h, w) or None, objects)`; raises DataError."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as error:
        line, column = error.position
        raise DataError(f"{xml_path}: line {line} column {column}: not "
                        f"valid XML ({error}).") from None
    size = root.find("size")
    declared = None
    if size is not None and size.findtext("width") and size.findtext(
            "height"):
        try:
            declared = (int(float(size.findtext("height"))),
                        int(float(size.findtext("width"))))
        except ValueError:
            raise DataError(f"{xml_path}: field 'size' = "
                            f"{size.findtext('width')!r} x "
                            f"{size.findtext('height')!r} is not a number."
                            ) from None
    objects = []
    for k, obj in enumerate(root.iter("object")):
        where = f"{xml_path}: object {k}"
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            return root.findtext("filename"), declared, (
                where, f"missing field '{'name' if not name else 'bndbox'}'")
        values = []
        for field in ("xmin", "ymin", "xmax", "ymax"):
            text = box.findtext(field)
            try:
                values.append(float(text))
            except (TypeError, ValueError):
                return root.findtext("filename"), declared, (
                    where, f"field '{field}' = {text!r} is not a number")
        difficult = (obj.findtext("difficult") or "0").strip() in ("1",
                                                                   "true")
        objects.append((name, values, difficult, where))
    return root.findtext("filename"), declared, objects


def _voc_names(directory):
    """`classes.txt` or, failing it, the sorted object names of every
    annotation file (so every split gets the same ids)."""
    names = _read_names_file(directory)
    if names is not None:
        return names
    annotation_dir, _ = _voc_dirs(directory)
    found = set()
    for name in os.listdir(annotation_dir):
        if name.endswith(".xml"):
            objects = _parse_voc(os.path.join(annotation_dir, name))[2]
            if isinstance(objects, list):
                found |= {o[0] for o in objects}
    return sorted(found)


def read_voc(directory, split="train", class_names=None, on_error="raise",
             include_difficult=False):
    """A Pascal VOC folder (see the module docstring)."""
    problems = _Problems(on_error, directory)
    annotation_dir, image_dir = _voc_dirs(directory)
    list_file, entries = _split_list(directory, split)
    if entries is None:
        stems = sorted(os.path.splitext(n)[0] for n in
                       os.listdir(annotation_dir) if n.endswith(".xml"))
    else:
        stems = [os.path.splitext(os.path.basename(e))[0] for e in entries]
    parsed = []
    for stem in stems:
        xml_path = os.path.join(annotation_dir, stem + ".xml")
        if not os.path.exists(xml_path):
            raise DataError(f"{list_file or annotation_dir}: no annotation "
                            f"{xml_path} for image {stem!r}.")
        parsed.append((stem, xml_path) + _parse_voc(xml_path))
    if class_names is None:
        class_names = _voc_names(directory)
    index = {n: i for i, n in enumerate(class_names)}
    paths, rows, ignored, declared = [], [], [], []
    for stem, xml_path, filename, size, objects in parsed:
        if isinstance(objects, tuple):  # a malformed object
            problems("malformed VOC object", f"{objects[0]}: {objects[1]}")
            continue
        path = os.path.join(image_dir, filename or "")
        if not filename or not os.path.exists(path):
            path = _resolve_listed(directory, stem, image_dir, xml_path)
        image_rows, image_ignored = [], []
        for name, box, difficult, where in objects:
            if difficult and not include_difficult:
                image_ignored.append((index.get(name, len(class_names)), box,
                                      f"{where} name {name!r}"))
                continue
            if name not in index:
                image_rows.append((len(class_names), box,
                                   f"{where} name {name!r}", False))
                continue
            image_rows.append((index[name], box, where, False))
        paths.append(path)
        rows.append(image_rows)
        ignored.append(image_ignored)
        declared.append(size + (xml_path,) if size else None)
    return _finish(paths, rows, ignored, class_names, directory, "voc",
                   problems, declared_sizes=declared)


# --------------------------------------------------------------- dispatch


def detect_format(source):
    """One of `FORMATS` for a path (see the module docstring)."""
    lower = str(source).lower()
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    if lower.endswith(".json"):
        return "coco"
    if os.path.isdir(source):
        try:
            _voc_dirs(source)
            return "voc"
        except DataError:
            pass
        if os.path.isdir(os.path.join(source, "images")):
            return "yolo"
    raise DataError(f"source {source!r}: not a dataset YAML, a COCO JSON, a "
                    "VOC folder (annotations/ + images/) nor a YOLO folder "
                    "(images/ + labels/)" + ("" if os.path.exists(source)
                                             else "; it does not exist") +
                    ".")


def read(source, split="train", format=None, images_dir=None,
         class_names=None, on_error="raise", include_difficult=False):
    """Reads one split of a dataset into `Records` (see the module
    docstring for the sources and the bad-data policy).

    Example:
        >>> records = read("coco128/coco128.yaml", split="val")
        >>> len(records), records.class_names[:2]   # 128, ['person', ...]
    """
    source = os.fspath(source)
    format = format or detect_format(source)
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}; got "
                         f"{format!r}.")
    if format != "coco" and images_dir:
        raise ValueError("`images_dir` goes with a COCO JSON source only.")
    if format == "yaml":
        return read_yaml(source, split, class_names, on_error)
    if format == "coco":
        records = read_coco_json(source, images_dir, on_error)
        if class_names:
            records.class_names = list(class_names)
        return records
    if format == "voc":
        return read_voc(source, split, class_names, on_error,
                        include_difficult)
    return read_yolo_folder(source, split, class_names, on_error)


def describe(source, format=None, images_dir=None):
    """`{"format", "class_names", "num_classes", "splits"}` of a dataset,
    without reading its images."""
    source = os.fspath(source)
    if source == "shapes":
        from keras_yolo.data.shapes import CLASS_NAMES

        return {"format": "shapes", "class_names": list(CLASS_NAMES),
                "num_classes": len(CLASS_NAMES), "splits": ["train", "val"]}
    format = format or detect_format(source)
    if format == "yaml":
        config = _load_yaml(source)
        if "names" not in config:
            raise DataError(f"{source}: missing field 'names'.")
        names = _names_from_yaml_value(config["names"], source)
        splits = [k for k in ("train", "val", "test") if config.get(k)]
    elif format == "coco":
        data = _load_json(source)
        if not isinstance(data, dict):
            raise DataError(f"{source}: expected a JSON object.")
        names = _coco_categories(data, source)[1]
        splits = [os.path.basename(source)]
    elif format == "voc":
        names = _voc_names(source)
        splits = _split_names(source)
    else:
        names = _read_names_file(source) or _numbered_names(
            list_images(os.path.join(source, "images")))
        splits = _split_names(source)
    return {"format": format, "class_names": names,
            "num_classes": len(names), "splits": splits}
