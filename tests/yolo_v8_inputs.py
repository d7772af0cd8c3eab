"""Random raw YOLOv8 head outputs and padded truths, shared by the v8 tests."""

import numpy as np

STRIDES = (8, 16, 32)
REG_MAX = 16


def random_levels(rng, batch, image_hw, num_classes, cls_bias=-2.0,
                  reg_max=REG_MAX, strides=STRIDES):
    """Raw levels `(B, H/s, W/s, 4 reg_max + C)`; class logits shifted by
    `cls_bias` (low, like a trained head's background)."""
    out = []
    for s in strides:
        p = rng.normal(0, 1.5, (batch, image_hw[0] // s, image_hw[1] // s,
                                4 * reg_max + num_classes)).astype(np.float32)
        p[..., 4 * reg_max:] += cls_bias
        out.append(p)
    return out


def padded_truths(rng, per_image, max_boxes, num_classes, crafted=()):
    """Padded `rel_center_xywh` truths: `per_image[b]` random rows (centres
    in [0.05, 0.95], log-uniform sizes in [0.02, 0.8]), then the crafted
    `(image, row)` rows; labels -1 pad."""
    batch = len(per_image)
    boxes = np.zeros((batch, max_boxes, 4), np.float32)
    labels = np.full((batch, max_boxes), -1, np.int32)
    for b, n in enumerate(per_image):
        rows = [np.concatenate([rng.uniform(0.05, 0.95, 2),
                                np.exp(rng.uniform(np.log(0.02),
                                                   np.log(0.8), 2))])
                for _ in range(n)]
        rows += [np.asarray(r, np.float32) for img, r in crafted if img == b]
        for m, row in enumerate(rows):
            boxes[b, m] = row
            labels[b, m] = rng.integers(0, num_classes)
    return boxes, labels
