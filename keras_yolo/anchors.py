"""Default anchors of each YOLO version, in pixels of the input image.

Nested as `(levels, anchors_per_level, 2)` with `(w, h)` rows, levels in
ascending stride. YOLOv2's cfgs give anchors in grid cells of the 13x13
output at 416 (stride 32); they are converted to pixels here.
"""

import numpy as np

YOLOV2_STRIDE = 32

# darknet cfg/yolov2-voc.cfg and cfg/yolov2.cfg, grid cells at stride 32.
_YOLOV2_VOC_CELLS = [(1.3221, 1.73145), (3.19275, 4.00944), (5.05587, 8.09892),
                     (9.47112, 4.84053), (11.2364, 10.0071)]
_YOLOV2_COCO_CELLS = [(0.57273, 0.677385), (1.87446, 2.06253), (3.33843, 5.47434),
                      (7.88282, 3.52778), (9.77052, 9.16828)]
YOLOV2_VOC_ANCHORS = (np.array([_YOLOV2_VOC_CELLS]) * YOLOV2_STRIDE).tolist()
YOLOV2_COCO_ANCHORS = (np.array([_YOLOV2_COCO_CELLS]) * YOLOV2_STRIDE).tolist()

# darknet cfg/yolov3.cfg: the nine COCO anchors at 416, masks 0-2 / 3-5 / 6-8.
YOLOV3_ANCHORS = [[(10, 13), (16, 30), (33, 23)],
                  [(30, 61), (62, 45), (59, 119)],
                  [(116, 90), (156, 198), (373, 326)]]

# AlexeyAB darknet cfg/yolov4.cfg at 608.
YOLOV4_ANCHORS = [[(12, 16), (19, 36), (40, 28)],
                  [(36, 75), (76, 55), (72, 146)],
                  [(142, 110), (192, 243), (459, 401)]]

# ultralytics yolov5 models/yolov5s.yaml (P3/8, P4/16, P5/32).
YOLOV5_ANCHORS = YOLOV3_ANCHORS

STRIDES = (8, 16, 32)


# --- YOLOv2 dimension clusters ------------------------------------------------

def _box_sizes(boxes, bounding_box_format):
    """`(N, 2)` sizes, or `(N, 4)` boxes in `bounding_box_format`, to sizes."""
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] not in (2, 4):
        raise ValueError(
            "`boxes` must be (N, 2) sizes (w, h) or (N, 4) boxes; got shape "
            f"{boxes.shape}.")
    if boxes.shape[1] == 4:
        if bounding_box_format is None:
            raise ValueError(
                "(N, 4) `boxes` need `bounding_box_format` (e.g. 'xyxy').")
        from keras_yolo import boxes as box_ops  # TF only when needed
        boxes = np.asarray(box_ops.convert(
            boxes, bounding_box_format,
            "rel_xywh" if bounding_box_format.startswith("rel_") else "xywh",
        ))[:, 2:]
    if not np.all(np.isfinite(boxes)) or not np.all(boxes > 0):
        bad = boxes[~(np.isfinite(boxes).all(1) & (boxes > 0).all(1))][0]
        raise ValueError(
            f"`boxes` sizes must be finite and > 0; got {bad.tolist()}.")
    return boxes


def _shape_iou(sizes, anchors):
    """IoU of boxes sharing a centre: `(N, 2)` x `(K, 2)` -> `(N, K)`."""
    inter = (np.minimum(sizes[:, None, 0], anchors[None, :, 0])
             * np.minimum(sizes[:, None, 1], anchors[None, :, 1]))
    union = (sizes[:, None, 0] * sizes[:, None, 1]
             + anchors[None, :, 0] * anchors[None, :, 1] - inter)
    return inter / union


def mean_best_iou(boxes, anchors, bounding_box_format=None):
    """Average over boxes of the best IoU with any anchor (shapes centred
    together): YOLO9000's "Avg IOU" of its Table 1.

    Args:
        boxes: `(N, 2)` sizes `(w, h)`, or `(N, 4)` boxes in
            `bounding_box_format`.
        anchors: `(K, 2)` or `(1, K, 2)` sizes in the same units.
    """
    sizes = _box_sizes(boxes, bounding_box_format)
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    return float(_shape_iou(sizes, anchors).max(1).mean())


def kmeans_anchors(boxes, k, seed=0, bounding_box_format=None, num_init=10,
                   max_iter=300):
    """YOLOv2's dimension clusters: k-means on box sizes with `d = 1 - IoU`.

        d(box, centroid) = 1 - IoU(box, centroid)   (both centred at 0)

    Lloyd iterations: assign each box to the centroid it overlaps most, move
    each centroid to the mean `(w, h)` of its boxes, until no assignment
    changes. Initial centroids are drawn by k-means++ with the same
    distance (probability proportional to d²); `num_init` seeded restarts,
    keeping the clustering with the highest mean best IoU. An emptied
    cluster restarts at the box worst covered. Deterministic for a seed.

    Args:
        boxes: `(N, 2)` sizes `(w, h)`, or `(N, 4)` boxes in
            `bounding_box_format`; anchors come out in the same units.
        k: number of anchors.
        seed: seed of the initialisations.
        bounding_box_format: needed for `(N, 4)` boxes.
        num_init: restarts.
        max_iter: most Lloyd iterations per restart.

    Returns:
        `(anchors, mean_iou)`: `(k, 2)` float64 `(w, h)` sorted by area, and
        the mean over boxes of the best IoU with them.

    Example:
        >>> anchors, avg_iou = kmeans_anchors(wh_pixels, k=5)
        >>> loss = YoloV2Loss(num_classes=20, anchors=[anchors])
    """
    sizes = _box_sizes(boxes, bounding_box_format)
    k = int(k)
    distinct = len(np.unique(sizes, axis=0))
    if not 1 <= k <= distinct:
        raise ValueError(
            f"`k` must be in [1, {distinct}] (the number of distinct box "
            f"sizes); got {k}.")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(max(1, int(num_init))):
        centroids = _kmeanspp_init(sizes, k, rng)
        assignment = None
        for _ in range(max_iter):
            iou = _shape_iou(sizes, centroids)
            new = iou.argmax(1)
            if assignment is not None and np.array_equal(new, assignment):
                break
            assignment = new
            for j in range(k):
                members = sizes[assignment == j]
                if len(members):
                    centroids[j] = members.mean(0)
                else:  # restart an empty cluster at the worst-covered box
                    centroids[j] = sizes[iou.max(1).argmin()]
        score = _shape_iou(sizes, centroids).max(1).mean()
        if best is None or score > best[1]:
            best = (centroids.copy(), score)
    centroids, score = best
    order = np.argsort(centroids[:, 0] * centroids[:, 1], kind="stable")
    return centroids[order], float(score)


def _kmeanspp_init(sizes, k, rng):
    centroids = [sizes[rng.integers(len(sizes))]]
    for _ in range(1, k):
        distance = 1.0 - _shape_iou(sizes, np.array(centroids)).max(1)
        weight = distance ** 2
        if weight.sum() <= 0:  # every box already equals a centroid
            weight = np.ones(len(sizes))
        centroids.append(sizes[rng.choice(len(sizes), p=weight / weight.sum())])
    return np.array(centroids, np.float64)
