"""Shared YOLOv1 test cases and the seed's loss in float64 numpy (`seed_loss_np`), used by
the YOLOv1 loss, decode and model tests and by the loss-contract tests."""

import numpy as np
import tensorflow as tf

from references import center_iou, sigmoid, softmax


def kept_objects(boxes, labels, s):
    """{(row, col): (x_off, y_off, w, h, label)}: the first object per cell."""
    cells = {}
    for box, label in zip(boxes, labels):
        if label < 0:
            continue
        col = min(int(box[0] * s), s - 1)
        row = min(int(box[1] * s), s - 1)
        if (row, col) not in cells:
            cells[(row, col)] = (box[0] * s - col, box[1] * s - row,
                                 box[2], box[3], int(label))
    return cells


def seed_loss_np(boxes, labels, raw, s, nb, c, lambda_coord=5.0,
                 lambda_noobj=0.5):
    """The seed's YOLOv1 loss, term by term, in float64 (batch mean)."""
    raw = np.asarray(raw, np.float64)
    total = dict(box=0.0, obj=0.0, noobj=0.0, cls=0.0)
    for b in range(raw.shape[0]):
        cells = kept_objects(boxes[b], labels[b], s)
        for row in range(s):
            for col in range(s):
                v = raw[b, row, col]
                preds = [sigmoid(v[5 * j:5 * j + 5]) for j in range(nb)]
                probs = softmax(v[5 * nb:])
                if (row, col) not in cells:
                    for p in preds:
                        total["noobj"] += lambda_noobj * p[4] ** 2
                    continue
                tx, ty, tw, th, label = cells[(row, col)]
                truth = ((col + tx) / s, (row + ty) / s, tw, th)
                ious = [center_iou(((col + p[0]) / s, (row + p[1]) / s, p[2], p[3]),
                                truth) for p in preds]
                if max(ious) > 0:
                    best = int(np.argmax(ious))
                else:
                    dist = [(p[0] / s - tx / s) ** 2 + (p[1] / s - ty / s) ** 2
                            + (p[2] - tw) ** 2 + (p[3] - th) ** 2 for p in preds]
                    best = int(np.argmin(dist))
                for j, p in enumerate(preds):
                    if j != best:
                        total["noobj"] += lambda_noobj * p[4] ** 2
                        continue
                    total["box"] += lambda_coord * (
                        (p[0] - tx) ** 2 + (p[1] - ty) ** 2
                        + (np.sqrt(p[2]) - np.sqrt(tw)) ** 2
                        + (np.sqrt(p[3]) - np.sqrt(th)) ** 2)
                    total["obj"] += (ious[j] - p[4]) ** 2
                onehot = np.eye(c)[label] if label < c else np.zeros(c)
                total["cls"] += np.sum((onehot - probs) ** 2)
    return {k: v / raw.shape[0] for k, v in total.items()}


def gt(boxes, labels):
    return {"boxes": tf.constant(boxes, tf.float32),
            "labels": tf.constant(labels, tf.int32)}


def random_case(rng, batch, s, nb, c, m, raw_scale=2.0):
    boxes = np.stack([rng.uniform(0.02, 0.98, (batch, m)),
                      rng.uniform(0.02, 0.98, (batch, m)),
                      rng.uniform(0.05, 0.7, (batch, m)),
                      rng.uniform(0.05, 0.7, (batch, m))], -1)
    labels = rng.integers(0, c, (batch, m))
    labels[rng.uniform(size=(batch, m)) < 0.3] = -1
    raw = rng.normal(0, raw_scale, (batch, s, s, nb * 5 + c))
    return boxes.astype(np.float32), labels.astype(np.int32), raw.astype(np.float32)
