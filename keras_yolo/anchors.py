"""Default anchors of each YOLO version, in pixels of the input image, and
the data-driven anchors: YOLOv2 dimension clusters and YOLOv5 autoanchor.

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


# --- YOLOv5 autoanchor --------------------------------------------------------
# ultralytics yolov5 utils/autoanchor.py: anchors fit a dataset when nearly
# every label has an anchor within a factor `anchor_t` in width and height
# (the same ratio test that assigns targets in training).

AUTOANCHOR_RECALL = 0.98     # check_anchors recomputes below this BPR
MIN_LABEL_PIXELS = 2.0       # kmean_anchors drops labels under this size
SMALL_LABEL_PIXELS = 3.0     # ... and warns about labels under this size
# kmean_anchors' genetic search: mutation probability and sigma, clip range.
MUTATION_PROB, MUTATION_SIGMA, MUTATION_CLIP = 0.9, 0.1, (0.3, 3.0)


def label_sizes(sizes, image_shapes, image_size=640):
    """Label `(w, h)` in pixels of images resized so their longest side is
    `image_size` (kmean_anchors' `wh0`).

    Args:
        sizes: list (one per image) of `(n_i, 2)` relative `(w, h)`.
        image_shapes: `(images, 2)` original `(width, height)`.
        image_size: training size.

    Returns:
        `(N, 2)` float64 pixel sizes.
    """
    shapes = np.asarray(image_shapes, np.float64).reshape(-1, 2)
    if len(shapes) != len(sizes):
        raise ValueError(f"{len(sizes)} label sets for {len(shapes)} "
                         "image shapes.")
    shapes = image_size * shapes / shapes.max(1, keepdims=True)
    parts = [np.asarray(s, np.float64).reshape(-1, 2) * shape
             for s, shape in zip(sizes, shapes)]
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def _ratio_metric(wh, anchors):
    """`(N, K)` worst-side ratio `min(r, 1/r)` of each label to each anchor."""
    r = wh[:, None] / anchors[None]
    return np.minimum(r, 1.0 / r).min(2)


def anchor_recall(wh, anchors, anchor_t=4.0):
    """check_anchors' metric: `(bpr, aat)`.

        x_ij = min over (w, h) of min(r, 1/r),  r = label_i / anchor_j
        bpr  = mean_i [max_j x_ij > 1/anchor_t]   (best possible recall)
        aat  = mean_i sum_j [x_ij > 1/anchor_t]   (anchors above threshold)

    Args:
        wh: `(N, 2)` label sizes in pixels.
        anchors: `(..., 2)` anchor sizes in pixels.
    """
    wh = np.asarray(wh, np.float32)
    anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
    x = _ratio_metric(wh, anchors)
    return (float((x.max(1) > 1.0 / anchor_t).mean()),
            float((x > 1.0 / anchor_t).sum(1).mean()))


def anchor_fitness(wh, anchors, anchor_t=4.0):
    """kmean_anchors' fitness: `mean_i best_i · [best_i > 1/anchor_t]`."""
    best = _ratio_metric(np.asarray(wh, np.float32),
                         np.asarray(anchors, np.float32).reshape(-1, 2)).max(1)
    return float((best * (best > 1.0 / anchor_t)).mean())


def _lloyd(points, guess, threshold=1e-5):
    """scipy.cluster.vq._kmeans: Lloyd iterations until the mean distance
    stops falling by more than `threshold`; empty clusters are dropped."""
    book = guess.copy()
    previous = np.inf
    while True:
        distance = np.sqrt(((points[:, None] - book[None]) ** 2).sum(-1))
        code = distance.argmin(1)
        mean = distance[np.arange(len(points)), code].mean()
        book = np.array([points[code == j].mean(0)
                         for j in range(len(book)) if (code == j).any()])
        if previous - mean <= threshold:
            return book, mean
        previous = mean


def evolve_anchors(wh, num_anchors=9, image_size=640, anchor_t=4.0,
                   generations=1000, seed=0, kmeans_restarts=30):
    """kmean_anchors: k-means of the label sizes, then a genetic search.

    1. Drop labels smaller than 2 px on both sides; whiten `(w, h)` by
       their standard deviations; k-means (`kmeans_restarts` random starts
       from the labels, Euclidean, best mean distance), un-whiten.
    2. `generations` times: multiply every anchor coordinate by
       `v = clip(1 + [u < 0.9] · U(0,1) · N(0,1) · 0.1, 0.3, 3.0)`, clip at
       2 px, keep the mutant if its `anchor_fitness` is higher.

    Args:
        wh: `(N, 2)` label sizes in pixels (see `label_sizes`).
        num_anchors: n (levels x anchors per level).
        image_size: the random fallback's scale.
        anchor_t: the ratio threshold (hyp `anchor_t`).
        generations: genetic iterations.
        seed: numpy seed of every random draw.

    Returns:
        `(num_anchors, 2)` float32 anchors sorted by area.

    Example:
        >>> wh = label_sizes(sizes, shapes, image_size=640)
        >>> anchors = evolve_anchors(wh, 9).reshape(3, 3, 2)
    """
    rng = np.random.default_rng(seed)
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    points = wh[(wh >= MIN_LABEL_PIXELS).any(1)].astype(np.float32)
    k = None
    if num_anchors <= len(points):
        sigma = points.std(0)
        sigma = np.where(sigma > 0, sigma, 1.0)
        white = points / sigma
        best = None
        for _ in range(kmeans_restarts):
            guess = white[rng.choice(len(white), num_anchors, replace=False)]
            book, distortion = _lloyd(white, guess)
            if best is None or distortion < best[1]:
                best = (book, distortion)
        if len(best[0]) == num_anchors:
            k = best[0] * sigma
    if k is None:  # too few or too similar labels: random init as yolov5
        k = np.sort(rng.random(num_anchors * 2)).reshape(num_anchors, 2) \
            * image_size
    fitness = anchor_fitness(points, k, anchor_t)
    for _ in range(generations):
        v = np.ones(k.shape)
        while (v == 1).all():
            v = ((rng.random(k.shape) < MUTATION_PROB) * rng.random()
                 * rng.standard_normal(k.shape) * MUTATION_SIGMA + 1.0
                 ).clip(*MUTATION_CLIP)
        mutant = (k * v).clip(min=MIN_LABEL_PIXELS)
        mutant_fitness = anchor_fitness(points, mutant, anchor_t)
        if mutant_fitness > fitness:
            fitness, k = mutant_fitness, mutant
    k = k[np.argsort(k.prod(1), kind="stable")]
    return k.astype(np.float32)


def check_anchors(wh, anchors, anchor_t=4.0, image_size=640,
                  recall_threshold=AUTOANCHOR_RECALL, generations=1000,
                  seed=0, scale_jitter=0.1):
    """check_anchors: keep `anchors` if their best possible recall on the
    labels exceeds `recall_threshold`, else evolve new ones and keep those
    if their recall is higher.

    The labels are jittered in scale by `U(1 − scale_jitter, 1 +
    scale_jitter)` per label for the recall check (yolov5 draws it per
    image), as training's scale augmentation would.

    Args:
        wh: `(N, 2)` label sizes in pixels of the training input.
        anchors: `(levels, A, 2)` pixel anchors.

    Returns:
        `(anchors, report)`: `(levels, A, 2)` float anchors (sorted by area
        across levels when replaced) and `{"bpr", "aat", "new_bpr",
        "replaced"}`.

    Example:
        >>> anchors, report = check_anchors(wh, YOLOV5_ANCHORS)
        >>> report["bpr"]        # 0.999: kept
    """
    anchors = np.asarray(anchors, np.float64)
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if not len(wh):
        raise ValueError("check_anchors needs at least one label size.")
    rng = np.random.default_rng(seed)
    jittered = wh * rng.uniform(1 - scale_jitter, 1 + scale_jitter,
                                size=(len(wh), 1))
    bpr, aat = anchor_recall(jittered, anchors, anchor_t)
    report = {"bpr": bpr, "aat": aat, "new_bpr": None, "replaced": False}
    if bpr > recall_threshold:
        return anchors, report
    new = evolve_anchors(wh, anchors.size // 2, image_size, anchor_t,
                         generations, seed)
    new_bpr, _ = anchor_recall(jittered, new, anchor_t)
    report["new_bpr"] = new_bpr
    if new_bpr > bpr:
        report["replaced"] = True
        return new.reshape(anchors.shape).astype(np.float64), report
    return anchors, report
