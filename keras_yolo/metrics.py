"""COCO mAP of padded detections, as a function and as a Keras callback.

The numbers are pycocotools' `COCOeval` (bbox) on an in-memory COCO dataset
built from the padded ground-truth contract, so they are the COCO leaderboard
numbers: AP averaged over IoU thresholds 0.50:0.05:0.95 with 101-point
interpolated precision, per class, then averaged over the classes that have
ground truth.

    AP_c(t)  = 1/101 Σ_{r ∈ {0, 0.01, ..., 1}} max_{r' ≥ r} precision_c(r'; IoU ≥ t)
    map      = mean_{c, t ∈ {0.50, 0.55, ..., 0.95}} AP_c(t)
    map50    = mean_c AP_c(0.50),   map75 = mean_c AP_c(0.75)

Result keys (pycocotools' `stats`, in order): `map`, `map50`, `map75`,
`map_small`, `map_medium`, `map_large`, `mar_1`, `mar_10`, `mar_100`
(`mar_<max_detections>` when that is not 100), `mar_small`, `mar_medium`,
`mar_large`. As in pycocotools, a value of -1 means "no ground truth in that
area range"; small / medium / large use areas in input pixels (< 32², < 96²).
"""

import contextlib
import io
import logging

import keras
import numpy as np

from keras_yolo import boxes as box_ops

STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large",
              "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium",
              "mar_large")
DETECTION_KEYS = ("boxes", "scores", "classes", "num_detections")
# COCO's default maxDets; the last one is the cap on detections per image.
COCO_MAX_DETECTIONS = (1, 10, 100)

_logger = logging.getLogger("keras_yolo")


def _numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _to_pixel_xywh(boxes, bounding_box_format, image_shape):
    """`(..., 4)` boxes in any format to COCO's `[x, y, w, h]` in pixels."""
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return boxes.reshape(-1, 4)
    if bounding_box_format.startswith("rel_") and image_shape is None:
        raise ValueError(
            f"bounding_box_format={bounding_box_format!r} is relative; pass "
            "`image_shape=(height, width)` so boxes can be measured in "
            "pixels (COCO's area ranges are in pixels)."
        )
    return np.asarray(box_ops.convert(boxes, bounding_box_format, "xywh",
                                      image_shape=image_shape))


def _check_keys(name, value, keys):
    if not isinstance(value, dict) or not set(keys) <= set(value):
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise ValueError(f"`{name}` must be a dict with keys {list(keys)}; "
                         f"got {got}.")


def coco_map(y_true, y_pred, bounding_box_format, image_shape=None,
             num_classes=None, max_detections=100, return_per_class=False):
    """COCO box mAP of a batch (or a whole set) of padded detections.

    Args:
        y_true: `{"boxes": (N, M, 4), "labels": (N, M)}`, padded with label -1.
        y_pred: `{"boxes": (N, K, 4), "scores": (N, K), "classes": (N, K),
            "num_detections": (N,)}` as returned by
            `keras_yolo.postprocess.non_max_suppression`: rows at or beyond
            `num_detections`, or with class -1, are padding.
        bounding_box_format: format of both `y_true["boxes"]` and
            `y_pred["boxes"]`.
        image_shape: `(height, width)` of the input images; required for
            `rel_` formats (COCO's small/medium/large are pixel areas).
        num_classes: C; default: 1 + the largest label or class seen.
        max_detections: detections per image kept (highest scores first);
            COCO's default is 100.
        return_per_class: also return `"per_class_map"` and
            `"per_class_map50"`: lists of C values (-1 for a class without
            ground truth).

    Returns:
        dict of Python floats, keys `STAT_NAMES` (see the module docstring).

    Example:
        >>> gt = {"boxes": [[[0, 0, 10, 10]]], "labels": [[0]]}
        >>> det = {"boxes": [[[0, 0, 10, 10]]], "scores": [[0.9]],
        ...        "classes": [[0]], "num_detections": [1]}
        >>> coco_map(gt, det, "xyxy")["map"]
        1.0
    """
    _check_keys("y_true", y_true, ("boxes", "labels"))
    _check_keys("y_pred", y_pred, DETECTION_KEYS)
    if bounding_box_format not in box_ops.FORMATS:
        raise ValueError(f"`bounding_box_format` must be one of "
                         f"{box_ops.FORMATS}; got {bounding_box_format!r}.")
    if int(max_detections) < 1:
        raise ValueError(
            f"`max_detections` must be >= 1; got {max_detections}.")
    gt_boxes = _numpy(y_true["boxes"]).astype(np.float64)
    gt_labels = _numpy(y_true["labels"]).astype(np.int64)
    det_boxes = _numpy(y_pred["boxes"]).astype(np.float64)
    det_scores = _numpy(y_pred["scores"]).astype(np.float64)
    det_classes = _numpy(y_pred["classes"]).astype(np.int64)
    det_num = _numpy(y_pred["num_detections"]).astype(np.int64).reshape(-1)
    if gt_boxes.ndim != 3 or gt_labels.shape != gt_boxes.shape[:2]:
        raise ValueError(
            f"`y_true` must hold boxes (N, M, 4) and labels (N, M); got "
            f"{gt_boxes.shape} and {gt_labels.shape}.")
    if det_boxes.ndim != 3 or det_scores.shape != det_boxes.shape[:2] or \
            det_classes.shape != det_boxes.shape[:2]:
        raise ValueError(
            f"`y_pred` must hold boxes (N, K, 4), scores (N, K) and classes "
            f"(N, K); got {det_boxes.shape}, {det_scores.shape} and "
            f"{det_classes.shape}.")
    num_images = gt_boxes.shape[0]
    if det_boxes.shape[0] != num_images or det_num.shape[0] != num_images:
        raise ValueError(
            f"`y_true` has {num_images} images but `y_pred` has "
            f"{det_boxes.shape[0]} (num_detections: {det_num.shape[0]}).")
    if num_classes is None:
        num_classes = int(max(gt_labels.max(initial=-1),
                              det_classes.max(initial=-1))) + 1
    num_classes = max(int(num_classes), 1)
    if image_shape is not None:
        height, width = int(image_shape[0]), int(image_shape[1])
    else:  # pixel formats: image size only sizes the (unused) image records
        height = width = 0

    gt_xywh = _to_pixel_xywh(gt_boxes, bounding_box_format, image_shape)
    det_xywh = _to_pixel_xywh(det_boxes, bounding_box_format, image_shape)
    rank = np.arange(det_boxes.shape[1])[None, :]
    det_valid = (rank < det_num[:, None]) & (det_classes >= 0)
    bad = np.argwhere(det_valid & (det_classes >= num_classes))
    if len(bad):
        i, j = bad[0]
        raise ValueError(
            f"`y_pred['classes']` image {i} row {j} = {det_classes[i, j]} is "
            f"outside [0, num_classes={num_classes}).")

    # COCO category ids start at 1 by convention; class c is category c + 1.
    annotations = []
    for i, j in np.argwhere(gt_labels >= 0):
        x, y, w, h = gt_xywh[i, j]
        annotations.append({
            "id": len(annotations) + 1, "image_id": int(i),
            "category_id": int(gt_labels[i, j]) + 1,
            "bbox": [float(x), float(y), float(w), float(h)],
            "area": float(w * h), "iscrowd": 0,
        })
    detections = []
    for i in range(num_images):
        valid = np.flatnonzero(det_valid[i])
        valid = valid[np.argsort(-det_scores[i, valid], kind="stable")]
        for j in valid[:max_detections]:
            x, y, w, h = det_xywh[i, j]
            detections.append([i, x, y, w, h, det_scores[i, j],
                               det_classes[i, j] + 1])
    return _cocoeval(num_images, height, width, num_classes, annotations,
                     detections, int(max_detections), return_per_class)


def _cocoeval(num_images, height, width, num_classes, annotations,
              detections, max_detections, return_per_class):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    max_dets = sorted({*COCO_MAX_DETECTIONS[:-1], max_detections})
    names = list(STAT_NAMES)
    names[8] = f"mar_{max_detections}"
    if not annotations:
        _logger.warning("coco_map: no ground-truth boxes; every metric is "
                        "undefined (-1).")
        result = {name: -1.0 for name in names}
        if return_per_class:
            result["per_class_map"] = [-1.0] * num_classes
            result["per_class_map50"] = [-1.0] * num_classes
        return result
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i, "height": height, "width": width}
                       for i in range(num_images)],
            "annotations": annotations,
            "categories": [{"id": c + 1, "name": str(c)}
                           for c in range(num_classes)],
        }
        gt.createIndex()
        if detections:
            dt = gt.loadRes(np.asarray(detections, np.float64))
        else:  # loadRes rejects an empty list; no detections -> AP 0
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "annotations": [],
                          "categories": gt.dataset["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    result = {name: float(v) for name, v in zip(names, ev.stats)}
    if return_per_class:
        # precision: (T iou thresholds, R recalls, K classes, A areas, M maxDets)
        precision = ev.eval["precision"][:, :, :, 0, -1]
        per_class, per_class50 = [], []
        for k in range(num_classes):
            p = precision[:, :, k]
            per_class.append(float(p[p > -1].mean()) if (p > -1).any()
                             else -1.0)
            p50 = p[0]
            per_class50.append(float(p50[p50 > -1].mean())
                               if (p50 > -1).any() else -1.0)
        result["per_class_map"] = per_class
        result["per_class_map50"] = per_class50
    return result


def evaluate(detector, dataset, bounding_box_format, num_classes=None,
             max_detections=100, max_batches=None, return_per_class=False):
    """Runs `detector` over `dataset` and returns `coco_map` of it all.

    Args:
        detector: callable `images (B, H, W, 3) -> detections dict`
            (`boxes`, `scores`, `classes`, `num_detections`, boxes in
            `bounding_box_format`), e.g. an exported serving signature or a
            model followed by decoding and NMS.
        dataset: batched `tf.data.Dataset` of `(images, {"boxes", "labels"})`.
        bounding_box_format: format of the ground truth and the detections.
        num_classes: C (default: inferred, see `coco_map`).
        max_detections: detections kept per image.
        max_batches: stop after this many batches (default: all).

    Returns:
        the dict of `coco_map`, plus `"num_images"`.
    """
    gts, dets, image_shape = [], [], None
    for step, (images, y_true) in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        image_shape = tuple(int(s) for s in images.shape[1:3])
        out = detector(images)
        _check_keys("detector(images)", out, DETECTION_KEYS)
        gts.append({k: _numpy(y_true[k]) for k in ("boxes", "labels")})
        dets.append({k: _numpy(out[k]) for k in DETECTION_KEYS})
    if not gts:
        raise ValueError("`dataset` yielded no batches to evaluate.")
    y_true = {k: _concat([g[k] for g in gts], -1) for k in ("boxes", "labels")}
    y_pred = {k: _concat([d[k] for d in dets], -1 if k != "num_detections"
                         else 0) for k in DETECTION_KEYS}
    result = coco_map(y_true, y_pred, bounding_box_format, image_shape,
                      num_classes, max_detections, return_per_class)
    result["num_images"] = int(y_true["labels"].shape[0])
    return result


def _concat(arrays, pad_value):
    """Concatenates along axis 0 arrays whose axis 1 (padding) may differ."""
    if arrays[0].ndim < 2:
        return np.concatenate(arrays, 0)
    width = max(a.shape[1] for a in arrays)
    padded = []
    for a in arrays:
        extra = [(0, 0)] * a.ndim
        extra[1] = (0, width - a.shape[1])
        padded.append(np.pad(a, extra, constant_values=pad_value))
    return np.concatenate(padded, 0)


class CocoMetricCallback(keras.callbacks.Callback):
    """Evaluates COCO mAP on a validation dataset every `every_n_epochs`.

    The results are added to the epoch's `logs` with `prefix` (so `History`,
    `CSVLogger`, `ModelCheckpoint(monitor="val_map50", mode="max")` and
    `EarlyStopping` see them) and kept in `self.history`.

    Args:
        dataset: batched `(images, {"boxes", "labels"})` validation dataset.
        bounding_box_format: format of the ground truth and the detections.
        postprocess: callable from the model's output (raw head outputs) to a
            detections dict, e.g. decode + `non_max_suppression`; `None` when
            the model already outputs detections.
        every_n_epochs: evaluate after epochs N, 2N, ... and after the last.
        num_classes: C (default: inferred).
        max_detections: detections kept per image.
        prefix: prefix of the log keys (`"val_"` gives `val_map`, ...).
        max_batches: evaluate at most this many batches.

    Example:
        >>> cb = CocoMetricCallback(val_ds, "rel_center_xywh",
        ...                         postprocess=decode_and_nms,
        ...                         every_n_epochs=5)
        >>> model.fit(train_ds, epochs=50, callbacks=[cb])
    """

    def __init__(self, dataset, bounding_box_format, postprocess=None,
                 every_n_epochs=1, num_classes=None, max_detections=100,
                 prefix="val_", max_batches=None):
        super().__init__()
        if int(every_n_epochs) < 1:
            raise ValueError(
                f"`every_n_epochs` must be >= 1; got {every_n_epochs}.")
        self.dataset = dataset
        self.bounding_box_format = bounding_box_format
        self.postprocess = postprocess
        self.every_n_epochs = int(every_n_epochs)
        self.num_classes = num_classes
        self.max_detections = max_detections
        self.prefix = prefix
        self.max_batches = max_batches
        self.history = []
        self._last_epoch = None

    def detector(self, images):
        outputs = self.model(images, training=False)
        return self.postprocess(outputs) if self.postprocess else outputs

    def on_train_begin(self, logs=None):
        self._last_epoch = None
        epochs = (self.params or {}).get("epochs")
        self._final_epoch = None if epochs is None else epochs - 1

    def on_epoch_end(self, epoch, logs=None):
        due = (epoch + 1) % self.every_n_epochs == 0
        if not (due or epoch == getattr(self, "_final_epoch", None)):
            return
        result = evaluate(self.detector, self.dataset,
                          self.bounding_box_format, self.num_classes,
                          self.max_detections, self.max_batches)
        self.history.append({"epoch": epoch + 1, **result})
        if logs is not None:
            for name in STAT_NAMES[:3]:
                logs[self.prefix + name] = result[name]
            for name, value in result.items():
                if name != "num_images":
                    logs.setdefault(self.prefix + name, value)
        _logger.info("epoch %d: %smap %.4f %smap50 %.4f", epoch + 1,
                     self.prefix, result["map"], self.prefix,
                     result["map50"])
