"""Shared YOLOv4 test cases: anchors and grids of a 64x64 input, random truths and
planted raw outputs, used by the YOLOv4 assignment, decode, loss and model tests."""

import math

import numpy as np

from keras_yolo.losses import YoloV4Loss


# Small anchors for a 64x64 input: grids 8, 4, 2; shapes chosen so that most
# truths have several anchors above iou_thresh, some on other levels.
ANCHORS = [[(6, 8), (10, 14), (14, 10)], [(18, 24), (24, 18), (28, 36)],
           [(40, 30), (48, 56), (60, 60)]]
STRIDES = (8, 16, 32)
SXY = (1.2, 1.1, 1.05)
GRIDS = (8, 4, 2)
IMAGE = 64
C = 3


def plant(raws, truth, level, anchor, grow=1.05):
    """Sets the raw output of (level, cell of truth, anchor) so that its
    decoded box is the truth `grow`n in size (IoU > 0.7)."""
    g, s = GRIDS[level], SXY[level]
    i, j = min(int(truth[0] * g), g - 1), min(int(truth[1] * g), g - 1)
    aw, ah = ANCHORS[level][anchor]
    for axis, cell in ((0, i), (1, j)):
        p = (truth[axis] * g - cell + (s - 1) / 2) / s
        raws[level][:, j, i, anchor, axis] = math.log(p / (1 - p))
    net = g * STRIDES[level]
    raws[level][:, j, i, anchor, 2] = math.log(truth[2] * net * grow / aw)
    raws[level][:, j, i, anchor, 3] = math.log(truth[3] * net * grow / ah)
    return j, i


def make_case(seed, batch=3):
    """Random outputs and truths: cell-border centres, several anchors per
    truth, two truths sharing an anchor, planted high-IoU predictions with
    and without a confident class, and an empty last image."""
    rng = np.random.default_rng(seed)
    m = 7
    raws = [rng.normal(0, 1, (batch, g, g, 3, 5 + C)) for g in GRIDS]
    truths = np.zeros((batch, m, 4))
    truths[..., :2] = rng.uniform(0.05, 0.95, (batch, m, 2))
    truths[..., 2:] = rng.uniform(0.08, 0.7, (batch, m, 2))
    labels = rng.integers(0, C, (batch, m))
    # Centres on cell borders of the 8x8 grid (3/8 exactly, just below 5/8).
    truths[:, 0, 0] = 3 / 8
    truths[:, 1, 1] = 5 / 8 - 1e-3
    # Truth 6 repeats truth 5's cell and shape with another class.
    truths[:, 6] = truths[:, 5] + [1e-3, 0, 0.01, 0]
    labels[:, 6] = (labels[:, 5] + 1) % C
    labels[-1] = -1  # an empty image
    labels[0, 4] = -1  # padding in the middle of a row
    for b in range(batch - 1):
        for t, class_logit in ((2, -4.0), (3, 1.0)):
            for level in (0, 1):
                for anchor in range(3):
                    j, i = plant([r[b:b + 1] for r in raws], truths[b, t],
                                 level, anchor)
                    raws[level][b, j, i, anchor, 5:] = class_logit
    return raws, truths.astype(np.float32), labels.astype(np.int32)


def v4_loss(**kwargs):
    kwargs = {"scale_x_y": SXY, **kwargs}
    return YoloV4Loss(num_classes=C, anchors=ANCHORS, strides=STRIDES, **kwargs)
