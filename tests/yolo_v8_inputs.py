"""Random raw YOLOv8 head outputs and padded truths, shared by the v8 tests."""

import numpy as np

from references import padded_random_truths

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
    return padded_random_truths(rng, per_image, max_boxes, num_classes, crafted,
                                centres=(0.05, 0.95), sizes=(0.02, 0.8))
