"""Float64 numpy references shared by several test files.

Each is the textbook formula (or the line-for-line darknet one), written once so
the tests that compare against it compare against the same thing. References
that differ on purpose (a scalar transcription of a C loop, a version-specific
epsilon) stay in the test or reference harness that needs them.

Example:
    >>> from references import sigmoid, center_iou
    >>> float(sigmoid(0.0))
    0.5
    >>> center_iou((0.5, 0.5, 1.0, 1.0), (0.5, 0.5, 0.5, 1.0))
    0.5
"""

import numpy as np


def sigmoid(x):
    """Logistic function, elementwise: `1 / (1 + exp(-x))`."""
    return 1.0 / (1.0 + np.exp(-x))


def softmax(t):
    """Softmax over every element of `t` (one class vector), shifted by its max."""
    e = np.exp(t - t.max())
    return e / e.sum()


def bce_with_logits(target, logit):
    """Binary cross-entropy of `target` and `sigmoid(logit)`, elementwise and stable:
    `log(1 + exp(logit)) - target * logit`."""
    return np.logaddexp(0.0, logit) - target * logit


def center_iou(a, b):
    """IoU of two single centre-size boxes `(x, y, w, h)` via their corners; 0 when
    the union is empty. Returns a Python float for Python-float inputs."""
    iw = min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2)
    ih = min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2)
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def darknet_box_iou(b1, b2):
    """darknet box.c `box_iou` of centre-size boxes `(..., 4)`, broadcast, line for
    line (`overlap`, `box_intersection`: a negative overlap means no intersection);
    0 where the union is 0."""
    def overlap(c1, s1, c2, s2):
        return np.minimum(c1 + s1 / 2, c2 + s2 / 2) - np.maximum(c1 - s1 / 2, c2 - s2 / 2)
    w = overlap(b1[..., 0], b1[..., 2], b2[..., 0], b2[..., 2])
    h = overlap(b1[..., 1], b1[..., 3], b2[..., 1], b2[..., 3])
    inter = np.where((w < 0) | (h < 0), 0.0, w * h)
    union = b1[..., 2] * b1[..., 3] + b2[..., 2] * b2[..., 3] - inter
    return np.where(union != 0, inter / np.where(union != 0, union, 1.0), 0.0)


def shape_iou(wh1, wh2):
    """IoU of sizes `(..., 2)` placed on a common centre, float64, broadcast; 0 where
    the union is empty."""
    wh1, wh2 = np.asarray(wh1, np.float64), np.asarray(wh2, np.float64)
    inter = np.minimum(wh1[..., 0], wh2[..., 0]) * np.minimum(wh1[..., 1], wh2[..., 1])
    union = wh1[..., 0] * wh1[..., 1] + wh2[..., 0] * wh2[..., 1] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def padded_random_truths(rng, per_image, max_boxes, num_classes, crafted=(),
                         centres=(0.0, 1.0), sizes=(0.01, 0.7)):
    """Padded `rel_center_xywh` truths: `per_image[b]` random rows (centres
    uniform in `centres`, sizes log-uniform in `sizes`), then the crafted
    `(image, row)` rows; random labels, -1 padding."""
    batch = len(per_image)
    boxes = np.zeros((batch, max_boxes, 4), np.float32)
    labels = np.full((batch, max_boxes), -1, np.int32)
    for b, n in enumerate(per_image):
        rows = [np.concatenate([rng.uniform(*centres, 2),
                                np.exp(rng.uniform(np.log(sizes[0]),
                                                   np.log(sizes[1]), 2))])
                for _ in range(n)]
        rows += [np.asarray(r, np.float32) for img, r in crafted if img == b]
        for m, row in enumerate(rows):
            boxes[b, m] = row
            labels[b, m] = rng.integers(0, num_classes)
    return boxes, labels
