"""Shared YOLOv5 test cases: padded random truths, used by the YOLOv5 loss and model tests."""

import numpy as np


def random_truths(rng, per_image, max_boxes, num_classes, crafted=()):
    """Padded rel_center_xywh truths: random rows, then crafted rows."""
    batch = len(per_image)
    boxes = np.zeros((batch, max_boxes, 4), np.float32)
    labels = np.full((batch, max_boxes), -1, np.int32)
    for b, n in enumerate(per_image):
        rows = [np.concatenate([rng.uniform(0, 1, 2),
                                np.exp(rng.uniform(np.log(0.01),
                                                   np.log(0.7), 2))])
                for _ in range(n)]
        rows += [np.asarray(r, np.float32) for img, r in crafted if img == b]
        for m, row in enumerate(rows):
            boxes[b, m] = row
            labels[b, m] = rng.integers(0, num_classes)
    return boxes, labels
