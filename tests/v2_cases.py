"""Shared YOLOv2 test cases and the seed's loss in float64 numpy (`seed_loss_np`), used by
the YOLOv2 loss, decode and model tests and by the loss-contract tests."""

import numpy as np

from references import center_iou, sigmoid, softmax


STRIDE = 32
ANCHORS_CELLS = np.array([[1.0, 1.5], [2.2, 3.0], [3.5, 2.0]])
ANCHORS = (ANCHORS_CELLS * STRIDE)[None]  # (1, A, 2) pixels


def responsible(boxes, labels, grid, anchors_cells):
    """{(row, col, anchor): truth index}, later truths overwriting."""
    height, width = grid
    slots = {}
    for m, (box, label) in enumerate(zip(boxes, labels)):
        if label < 0:
            continue
        col = min(int(np.floor(box[0] * width)), width - 1)
        row = min(int(np.floor(box[1] * height)), height - 1)
        shape = (0.0, 0.0, box[2] * width, box[3] * height)
        ious = [center_iou(shape, (0.0, 0.0, pw, ph)) for pw, ph in anchors_cells]
        slots[(row, col, int(np.argmax(ious)))] = m
    return slots


def seed_loss_np(raw, boxes, labels, anchors_cells, lambda_coord=1.0,
                 lambda_obj=5.0, lambda_noobj=1.0, lambda_class=1.0,
                 ignore_thresh=None):
    """The seed's YOLOv2 loss, term by term, float64, averaged over images."""
    raw = np.asarray(raw, np.float64)
    batch, height, width, num_anchors, _ = raw.shape
    total = dict(box=0.0, obj=0.0, noobj=0.0, cls=0.0)
    for b in range(batch):
        slots = responsible(boxes[b], labels[b], (height, width), anchors_cells)
        truths = [boxes[b][m] for m in range(len(labels[b])) if labels[b][m] >= 0]
        for row in range(height):
            for col in range(width):
                for a in range(num_anchors):
                    t = raw[b, row, col, a]
                    x_hat = sigmoid(t[0]) + col          # grid cells
                    y_hat = sigmoid(t[1]) + row
                    w_hat = anchors_cells[a][0] * np.exp(t[2])
                    h_hat = anchors_cells[a][1] * np.exp(t[3])
                    c_hat = sigmoid(t[4])
                    pred_rel = (x_hat / width, y_hat / height, w_hat / width,
                                h_hat / height)
                    m = slots.get((row, col, a))
                    if m is None:
                        best = max([center_iou(pred_rel, g) for g in truths],
                                   default=0.0)
                        if ignore_thresh is None or best <= ignore_thresh:
                            total["noobj"] += lambda_noobj * c_hat**2
                        continue
                    x, y, w, h = boxes[b][m]
                    total["box"] += lambda_coord * (2 - w * h) * (
                        (x * width - x_hat) ** 2 + (y * height - y_hat) ** 2
                        + (w * width - w_hat) ** 2 + (h * height - h_hat) ** 2)
                    total["obj"] += lambda_obj * (
                        center_iou((x, y, w, h), pred_rel) - c_hat) ** 2
                    p = np.eye(raw.shape[-1] - 5)[labels[b][m]]
                    total["cls"] += lambda_class * np.sum(
                        (p - softmax(t[5:])) ** 2)
    return {k: v / batch for k, v in total.items()}


def random_case(seed, batch=3, grid=(5, 7), num_classes=4, max_boxes=6,
                scale=1.0):
    """Raw outputs and rel_center_xywh truths; image 0 gets two truths in
    one cell and anchor, the last image none."""
    rng = np.random.default_rng(seed)
    height, width = grid
    raw = rng.normal(0, scale, (batch, height, width, 3, 5 + num_classes))
    boxes = np.zeros((batch, max_boxes, 4))
    labels = np.full((batch, max_boxes), -1)
    for b in range(batch - 1):
        n = rng.integers(2, max_boxes + 1)
        xy = rng.uniform(0.02, 0.98, (n, 2))
        wh = rng.uniform(0.05, 0.7, (n, 2))
        boxes[b, :n] = np.concatenate([xy, wh], 1)
        labels[b, :n] = rng.integers(0, num_classes, n)
    boxes[0, 1] = boxes[0, 0] + [0.001, 0.001, 0.01, -0.01]  # same slot
    labels[0, 1] = (labels[0, 0] + 1) % num_classes
    return raw.astype(np.float32), boxes.astype(np.float32), labels.astype(np.int32)
