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

Ignored regions: `y_true` may also hold `"ignored_boxes"` (N, K, 4) and
`"ignored_labels"` (N, K), padded with label -1 (`keras_yolo.data.load(...,
return_ignored=True)` yields them: COCO `iscrowd=1` regions, VOC `difficult`
objects). They enter COCOeval as `iscrowd=1` annotations of their class, so
pycocotools ignores them as on the COCO leaderboard: they are not positives
(recall does not count them), and a detection of their class that matches
no truth but overlaps one by IoU-with-crowd (intersection over the
detection's own area) at least the threshold is neither a true nor a false
positive. Without those keys, nothing is ignored.
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


def _padded_arrays(y_true, y_pred):
    """Padded ground truth and detections as float64 / int64 numpy arrays,
    their keys and shapes checked: `(gt_boxes (N, M, 4), gt_labels (N, M),
    det_boxes (N, K, 4), det_scores (N, K), det_classes (N, K),
    det_num (N,))`."""
    _check_keys("y_true", y_true, ("boxes", "labels"))
    _check_keys("y_pred", y_pred, DETECTION_KEYS)
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
    return gt_boxes, gt_labels, det_boxes, det_scores, det_classes, det_num


IGNORED_KEYS = ("ignored_boxes", "ignored_labels")


def _ignored_arrays(y_true, num_images):
    """`(boxes (N, K, 4), labels (N, K))` of the ignored regions in
    `y_true`, or `(None, None)` when it holds none."""
    present = [k for k in IGNORED_KEYS if k in y_true]
    if not present:
        return None, None
    if len(present) == 1:
        raise ValueError(f"`y_true` holds {present[0]!r} without "
                         f"{[k for k in IGNORED_KEYS if k not in present][0]!r}"
                         "; pass both or neither.")
    boxes = _numpy(y_true["ignored_boxes"]).astype(np.float64)
    labels = _numpy(y_true["ignored_labels"]).astype(np.int64)
    if boxes.ndim != 3 or labels.shape != boxes.shape[:2] or \
            boxes.shape[0] != num_images:
        raise ValueError(
            f"`y_true` must hold ignored_boxes (N, K, 4) and ignored_labels "
            f"(N, K) for its N={num_images} images; got {boxes.shape} and "
            f"{labels.shape}.")
    return boxes, labels


def _check_keys(name, value, keys):
    if not isinstance(value, dict) or not set(keys) <= set(value):
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise ValueError(f"`{name}` must be a dict with keys {list(keys)}; "
                         f"got {got}.")


def coco_map(y_true, y_pred, bounding_box_format, image_shape=None,
             num_classes=None, max_detections=100, return_per_class=False,
             return_pr_curve=False):
    """COCO box mAP of a batch (or a whole set) of padded detections.

    Args:
        y_true: `{"boxes": (N, M, 4), "labels": (N, M)}`, padded with label -1;
            optionally also `"ignored_boxes"` (N, K, 4) and
            `"ignored_labels"` (N, K): regions COCO ignores (crowd,
            difficult; see the module docstring).
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
        return_pr_curve: also return `"pr_recall"` (the 101 recall points
            0, 0.01, ..., 1) and `"pr_precision"` (C lists of 101: COCOeval's
            interpolated precision at IoU 0.5, all areas, the largest
            detection cap; -1 for a class without ground truth). Their mean
            over the recall points is the class' AP@0.5.

    Returns:
        dict of Python floats, keys `STAT_NAMES` (see the module docstring).

    Example:
        >>> gt = {"boxes": [[[0, 0, 10, 10]]], "labels": [[0]]}
        >>> det = {"boxes": [[[0, 0, 10, 10]]], "scores": [[0.9]],
        ...        "classes": [[0]], "num_detections": [1]}
        >>> coco_map(gt, det, "xyxy")["map"]
        1.0
    """
    if bounding_box_format not in box_ops.FORMATS:
        raise ValueError(f"`bounding_box_format` must be one of "
                         f"{box_ops.FORMATS}; got {bounding_box_format!r}.")
    if int(max_detections) < 1:
        raise ValueError(
            f"`max_detections` must be >= 1; got {max_detections}.")
    (gt_boxes, gt_labels, det_boxes, det_scores, det_classes,
     det_num) = _padded_arrays(y_true, y_pred)
    num_images = gt_boxes.shape[0]
    if det_boxes.shape[0] != num_images or det_num.shape[0] != num_images:
        raise ValueError(
            f"`y_true` has {num_images} images but `y_pred` has "
            f"{det_boxes.shape[0]} (num_detections: {det_num.shape[0]}).")
    ignored_boxes, ignored_labels = _ignored_arrays(y_true, num_images)
    if num_classes is None:
        num_classes = int(max(gt_labels.max(initial=-1),
                              det_classes.max(initial=-1))) + 1
    if ignored_labels is not None:
        bad = np.argwhere(ignored_labels >= max(int(num_classes), 1))
        if len(bad):
            i, j = bad[0]
            raise ValueError(
                f"`y_true['ignored_labels']` image {i} row {j} = "
                f"{ignored_labels[i, j]} is outside [0, num_classes="
                f"{num_classes}).")
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

    def annotate(xywh, labels, iscrowd):
        for i, j in np.argwhere(labels >= 0):
            x, y, w, h = xywh[i, j]
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(i),
                "category_id": int(labels[i, j]) + 1,
                "bbox": [float(x), float(y), float(w), float(h)],
                "area": float(w * h), "iscrowd": iscrowd,
            })

    annotate(gt_xywh, gt_labels, 0)
    if ignored_boxes is not None:
        annotate(_to_pixel_xywh(ignored_boxes, bounding_box_format, image_shape),
                 ignored_labels, 1)
    detections = []
    for i in range(num_images):
        valid = np.flatnonzero(det_valid[i])
        valid = valid[np.argsort(-det_scores[i, valid], kind="stable")]
        for j in valid[:max_detections]:
            x, y, w, h = det_xywh[i, j]
            detections.append([i, x, y, w, h, det_scores[i, j],
                               det_classes[i, j] + 1])
    return _cocoeval(num_images, height, width, num_classes, annotations,
                     detections, int(max_detections), return_per_class,
                     return_pr_curve)


def _cocoeval(num_images, height, width, num_classes, annotations,
              detections, max_detections, return_per_class,
              return_pr_curve=False):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    max_dets = sorted({*COCO_MAX_DETECTIONS[:-1], max_detections})
    names = list(STAT_NAMES)
    names[8] = f"mar_{max_detections}"
    if not any(not a["iscrowd"] for a in annotations):
        _logger.warning("coco_map: no ground-truth boxes; every metric is "
                        "undefined (-1).")
        result = {name: -1.0 for name in names}
        if return_per_class:
            result["per_class_map"] = [-1.0] * num_classes
            result["per_class_map50"] = [-1.0] * num_classes
        if return_pr_curve:
            result["pr_recall"] = np.linspace(0, 1, 101).tolist()
            result["pr_precision"] = [[-1.0] * 101] * num_classes
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
    if return_pr_curve:
        result["pr_recall"] = [float(r) for r in ev.params.recThrs]
        result["pr_precision"] = ev.eval["precision"][0, :, :, 0, -1].T.tolist()
    return result


def evaluate(detector, dataset, bounding_box_format, num_classes=None,
             max_detections=100, max_batches=None, return_per_class=False,
             return_pr_curve=False, return_confusion_matrix=False):
    """Runs `detector` over `dataset` and returns `coco_map` of it all.

    Args:
        detector: callable `images (B, H, W, 3) -> detections dict`
            (`boxes`, `scores`, `classes`, `num_detections`, boxes in
            `bounding_box_format`), e.g. an exported serving signature or a
            model followed by decoding and NMS.
        dataset: batched `tf.data.Dataset` of `(images, {"boxes", "labels"})`
            (plus `"ignored_boxes"`, `"ignored_labels"` when it carries the
            regions to ignore, e.g. `keras_yolo.data.load(...,
            return_ignored=True)`; see `coco_map`).
        bounding_box_format: format of the ground truth and the detections.
        num_classes: C (default: inferred, see `coco_map`).
        max_detections: detections kept per image.
        max_batches: stop after this many batches (default: all).
        return_per_class, return_pr_curve: see `coco_map`.
        return_confusion_matrix: also return `"confusion_matrix"` (see
            `confusion_matrix`, default thresholds), as nested lists.

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
        gts.append({k: _numpy(y_true[k]) for k in ("boxes", "labels")
                    + IGNORED_KEYS if k in y_true})
        dets.append({k: _numpy(out[k]) for k in DETECTION_KEYS})
    if not gts:
        raise ValueError("`dataset` yielded no batches to evaluate.")
    y_true = {k: _concat([g[k] for g in gts], -1) for k in gts[0]}
    y_pred = {k: _concat([d[k] for d in dets], -1 if k != "num_detections"
                         else 0) for k in DETECTION_KEYS}
    result = coco_map(y_true, y_pred, bounding_box_format, image_shape,
                      num_classes, max_detections, return_per_class,
                      return_pr_curve)
    result["num_images"] = int(y_true["labels"].shape[0])
    if return_confusion_matrix:
        result["confusion_matrix"] = confusion_matrix(
            y_true, y_pred, bounding_box_format, num_classes,
            image_shape).tolist()
    return result


def confusion_matrix(y_true, y_pred, bounding_box_format, num_classes=None,
                     image_shape=None, conf_thres=0.25, iou_thres=0.45):
    """Detection confusion matrix, ultralytics' definition.

    Per image, detections scoring above `conf_thres` are matched one to one
    and class-agnostically to the ground truth: in descending score, each
    detection with some IoU > `iou_thres` claims its best unclaimed truth.
    A matched pair counts at `[detected class, true class]` (off-diagonal:
    a confusion), an unmatched truth at `[C, true class]` (missed, "background"),
    an unmatched detection at `[detected class, C]` (false positive).

    Args:
        y_true, y_pred: as in `coco_map` (padded ground truth; padded
            detections with `num_detections`).
        bounding_box_format: format of both.
        num_classes: C (default: inferred as in `coco_map`).
        image_shape: `(height, width)`, needed for `rel_` formats.
        conf_thres: detections scoring at most this are ignored
            (ultralytics: 0.25).
        iou_thres: matching IoU (ultralytics: 0.45).

    Returns:
        `(C + 1, C + 1)` float64 counts indexed `[predicted, true]`, the
        last row and column being background.

    Example:
        >>> gt = {"boxes": [[[0, 0, 10, 10]]], "labels": [[1]]}
        >>> det = {"boxes": [[[0, 0, 10, 10]]], "scores": [[0.9]],
        ...        "classes": [[0]], "num_detections": [1]}
        >>> confusion_matrix(gt, det, "xyxy", num_classes=2)[0, 1]
        1.0
    """
    (gt_boxes, gt_labels, det_boxes, det_scores, det_classes,
     det_num) = _padded_arrays(y_true, y_pred)
    if num_classes is None:
        num_classes = int(max(gt_labels.max(initial=-1),
                              det_classes.max(initial=-1))) + 1
    c = max(int(num_classes), 1)
    matrix = np.zeros((c + 1, c + 1))
    gt_xyxy = _to_pixel_xyxy(gt_boxes, bounding_box_format, image_shape)
    det_xyxy = _to_pixel_xyxy(det_boxes, bounding_box_format, image_shape)
    for i in range(gt_boxes.shape[0]):
        keep_gt = np.flatnonzero(gt_labels[i] >= 0)
        rank = np.arange(det_boxes.shape[1])
        keep_det = np.flatnonzero((rank < det_num[i]) & (det_classes[i] >= 0)
                                  & (det_scores[i] > conf_thres))
        true = gt_labels[i, keep_gt]
        pred = det_classes[i, keep_det]
        if np.any(pred >= c) or np.any(true >= c):
            raise ValueError(f"image {i}: a class is outside [0, {c}).")
        iou = _pairwise_iou(gt_xyxy[i, keep_gt], det_xyxy[i, keep_det])
        match = np.full(len(keep_gt), -1)
        candidates = np.flatnonzero((iou > iou_thres).any(0)) if iou.size \
            else np.zeros(0, np.int64)
        order = np.argsort(-det_scores[i, keep_det][candidates],
                           kind="stable")
        for d in candidates[order]:
            g = iou[:, d].argmax()
            if iou[g, d] > iou_thres:
                match[g] = d
                iou[g] = 0.0
        for g, label in enumerate(true):
            matrix[pred[match[g]] if match[g] >= 0 else c, label] += 1
        matched = set(match[match >= 0].tolist())
        for d, label in enumerate(pred):
            if d not in matched:
                matrix[label, c] += 1
    return matrix


def _to_pixel_xyxy(boxes, bounding_box_format, image_shape):
    xywh = _to_pixel_xywh(boxes, bounding_box_format, image_shape)
    xywh = np.asarray(xywh, np.float64).reshape(boxes.shape)
    return np.concatenate([xywh[..., :2], xywh[..., :2] + xywh[..., 2:]], -1)


def _pairwise_iou(a, b):
    """(N, 4) x (M, 4) xyxy -> (N, M) plain IoU (torchvision's box_iou)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area_a = np.prod(a[:, 2:] - a[:, :2], -1)
    area_b = np.prod(b[:, 2:] - b[:, :2], -1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


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
