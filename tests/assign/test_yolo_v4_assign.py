"""keras_yolo.assign.yolo_v4: the best anchor and every anchor above iou_thresh,
against the float64 reference (`v4_reference.py`)."""

import numpy as np

import v4_reference as ref
from keras_yolo.assign import yolo_v4 as assign_v4
from v4_cases import ANCHORS, GRIDS, IMAGE, make_case


def test_assign_best_anchor_and_all_above_iou_thresh():
    raws, truths, labels = make_case(0)
    out = assign_v4.assign(truths, labels >= 0, ANCHORS, [(g, g) for g in GRIDS],
                           (IMAGE, IMAGE), 0.213)
    mask, cells = out["mask"].numpy(), out["cells"].numpy()
    flat = [a for level in ANCHORS for a in level]
    several = 0
    for b in range(truths.shape[0]):
        for t in range(truths.shape[1]):
            ious = [ref.box_iou((0, 0, w / IMAGE, h / IMAGE),
                                (0, 0, truths[b, t, 2], truths[b, t, 3]))
                    for w, h in flat]
            want = np.array(ious) > 0.213
            want[int(np.argmax(ious))] = True
            want &= labels[b, t] >= 0
            np.testing.assert_array_equal(mask[b, t].reshape(-1), want)
            several += want.sum() >= 2
            for level, g in enumerate(GRIDS):
                assert tuple(cells[b, t, level]) == (int(truths[b, t, 1] * g),
                                                     int(truths[b, t, 0] * g))
    assert several >= 5
    assert cells[0, 0, 0, 1] == 3 and cells[0, 1, 0, 0] == 4  # the borders


def test_iou_thresh_one_keeps_only_the_best_anchor():
    _, truths, labels = make_case(1)
    out = assign_v4.assign(truths, labels >= 0, ANCHORS, [(g, g) for g in GRIDS],
                           (IMAGE, IMAGE), 1.0)
    per_truth = out["mask"].numpy().reshape(truths.shape[0], truths.shape[1], -1)
    np.testing.assert_array_equal(per_truth.sum(-1), (labels >= 0).astype(int))
