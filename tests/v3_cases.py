"""Shared YOLOv3 test cases (the grids and anchors of a 64x64 input, random truths, planted
predictions) and the seed's loss in float64 numpy (`seed_loss_np`), used by the YOLOv3
loss, decode and model tests and by the loss-contract tests."""

import numpy as np

from keras_yolo.anchors import YOLOV3_ANCHORS
from references import bce_with_logits, center_iou, sigmoid


STRIDES = (8, 16, 32)
GRIDS = (8, 4, 2)  # a 64 x 64 input
IMAGE = 64
# The COCO anchors scaled from 416 to about 64 pixels.
SMALL_ANCHORS = (np.array(YOLOV3_ANCHORS, np.float64) / 6.5).tolist()


def shape_iou_np(wh1, wh2):
    return center_iou((0, 0, *wh1), (0, 0, *wh2))


def seed_loss_np(raw_levels, boxes, labels, anchors, num_classes,
                 lambda_coord=1.0, lambda_obj=1.0, lambda_class=1.0,
                 ignore_thresh=0.5, gate="anchor", gate_thresh=0.5):
    """The seed's YOLOv3 loss and its gradient, loop by loop, in float64.

    Returns (components averaged over the batch, gradients per level,
    counts: responsible slots with the coordinate gate open / closed, and
    ignored slots).
    """
    raw_levels = [np.asarray(r, np.float64) for r in raw_levels]
    anchors = np.asarray(anchors, np.float64)
    flat = anchors.reshape(-1, 2)
    per_level = anchors.shape[1]
    batch = raw_levels[0].shape[0]
    img_h = raw_levels[0].shape[1] * STRIDES[0]
    img_w = raw_levels[0].shape[2] * STRIDES[0]
    total = dict(box=0.0, obj=0.0, cls=0.0)
    grads = [np.zeros_like(r) for r in raw_levels]
    gate_counts = [0, 0, 0]
    for b in range(batch):
        # Responsible slots: the best of all nine anchors, last truth wins,
        # classes accumulate.
        owner, classes = {}, {}
        truths = [(boxes[b, m].astype(np.float64), int(labels[b, m]))
                  for m in range(boxes.shape[1]) if labels[b, m] >= 0]
        for box, label in truths:
            wh = (box[2] * img_w, box[3] * img_h)
            ious = [shape_iou_np(wh, a) for a in flat]
            k = int(np.argmax(ious))
            level, a = divmod(k, per_level)
            h, w = raw_levels[level].shape[1:3]
            col, row = min(int(box[0] * w), w - 1), min(int(box[1] * h), h - 1)
            owner[(level, row, col, a)] = box
            classes.setdefault((level, row, col, a), set()).add(label)
        for level, raw in enumerate(raw_levels):
            _, h, w, na, _ = raw.shape
            for row in range(h):
                for col in range(w):
                    for a in range(na):
                        r = raw[b, row, col, a]
                        g = grads[level][b, row, col, a]
                        aw, ah = anchors[level, a]
                        pred = ((sigmoid(r[0]) + col) / w,
                                (sigmoid(r[1]) + row) / h,
                                aw * np.exp(r[2]) / img_w,
                                ah * np.exp(r[3]) / img_h)
                        key = (level, row, col, a)
                        if key not in owner:
                            best = max([center_iou(pred, t) for t, _ in truths],
                                       default=0.0)
                            if best <= ignore_thresh:
                                total["obj"] += lambda_obj * bce_with_logits(0.0, r[4])
                                g[4] += lambda_obj * sigmoid(r[4])
                            else:
                                gate_counts[2] += 1
                            continue
                        box = owner[key]
                        total["obj"] += lambda_obj * bce_with_logits(1.0, r[4])
                        g[4] += lambda_obj * (sigmoid(r[4]) - 1.0)
                        for c in range(num_classes):
                            p = 1.0 if c in classes[key] else 0.0
                            total["cls"] += lambda_class * bce_with_logits(p, r[5 + c])
                            g[5 + c] += lambda_class * (sigmoid(r[5 + c]) - p)
                        # t = inverse of x = logistic(t_x) + c_x, w = p_w e^t_w.
                        ox = np.clip(box[0] * w - col, 1e-3, 1 - 1e-3)
                        oy = np.clip(box[1] * h - row, 1e-3, 1 - 1e-3)
                        t = np.array([np.log(ox / (1 - ox)), np.log(oy / (1 - oy)),
                                      np.log(box[2] * img_w / aw),
                                      np.log(box[3] * img_h / ah)])
                        if gate == "anchor":
                            on = shape_iou_np((box[2] * img_w, box[3] * img_h),
                                              (aw, ah)) > gate_thresh
                        elif gate == "prediction":
                            on = center_iou(pred, box) > gate_thresh
                        else:
                            on = True
                        gate_counts[0 if on else 1] += 1
                        if on:
                            scale = lambda_coord * (2 - box[2] * box[3])
                            total["box"] += scale * np.sum((t - r[:4]) ** 2)
                            g[:4] += -2 * scale * (t - r[:4])
    return ({k: v / batch for k, v in total.items()},
            [g / batch for g in grads], gate_counts)


def random_case(seed, batch=2, num_truths=8, num_classes=3, spread=1.0,
                grids=GRIDS, anchor_sized=False):
    """Random raw outputs and truths (rel_center_xywh), last image half padded.

    `anchor_sized`: truth sizes within 25% of a random anchor's, so that
    near-zero outputs (anchor-shaped predictions) overlap some of them well.
    """
    rng = np.random.default_rng(seed)
    raw = [(spread * rng.normal(size=(batch, g, g, 3, 5 + num_classes)))
           .astype(np.float32) for g in grids]
    centres = rng.uniform(0.02, 0.98, (batch, num_truths, 2))
    sizes = rng.uniform(0.03, 0.9, (batch, num_truths, 2))
    if anchor_sized:
        flat = np.reshape(SMALL_ANCHORS, (-1, 2)) / IMAGE
        sizes = (flat[rng.integers(0, len(flat), (batch, num_truths))]
                 * rng.uniform(0.8, 1.25, (batch, num_truths, 2)))
    boxes = np.concatenate([centres, sizes], -1).astype(np.float32)
    labels = rng.integers(0, num_classes, (batch, num_truths)).astype(np.int32)
    labels[-1, num_truths // 2:] = -1          # padding
    boxes[-1, num_truths // 2:] = 7.0          # padded rows hold anything
    return raw, boxes, labels


def plant_predictions(raw, boxes, labels, anchors=SMALL_ANCHORS):
    """Makes one non-responsible prediction per image decode to a truth.

    For the first truth of each image, an anchor of the coarsest level that
    is not its best anchor gets raw outputs that decode to that truth's box
    shrunk by 10% (IoU about 0.8: an IoU of exactly 1 can round above 1 in
    float32), so the ignore rule (and a truth_thresh < 0.8) fires there.
    """
    flat = np.reshape(anchors, (-1, 2))
    level = len(raw) - 1
    _, h, w, na, _ = raw[level].shape
    for b in range(len(boxes)):
        m = int(np.argmax(labels[b] >= 0))
        box = boxes[b, m].astype(np.float64)
        wh = (box[2] * IMAGE, box[3] * IMAGE)
        best = int(np.argmax([shape_iou_np(wh, a) for a in flat]))
        a = next(a for a in range(na) if level * na + a != best)
        col, row = min(int(box[0] * w), w - 1), min(int(box[1] * h), h - 1)
        ox = np.clip(box[0] * w - col, 0.01, 0.99)
        oy = np.clip(box[1] * h - row, 0.01, 0.99)
        raw[level][b, row, col, a, :4] = [
            np.log(ox / (1 - ox)), np.log(oy / (1 - oy)),
            np.log(0.9 * wh[0] / anchors[level][a][0]),
            np.log(0.9 * wh[1] / anchors[level][a][1])]
    return raw
