"""keras_yolo.assign.yolo_v3: the best anchor over all levels and the per-level slots, by hand."""

import numpy as np
import tensorflow as tf

from keras_yolo.assign import matching
from keras_yolo.assign import yolo_v3 as assign


def test_best_anchor_is_over_all_levels_first_on_ties():
    anchors = tf.constant([[10, 10], [20, 20], [20, 20], [40, 10]], tf.float32)
    wh = tf.constant([[[10, 10], [19, 21], [20, 20], [40, 11], [1, 1]]],
                     tf.float32)
    np.testing.assert_array_equal(matching.best_anchor(wh, anchors).numpy(),
                                  [[0, 1, 1, 3, 0]])


def test_assign_level_last_truth_wins_classes_accumulate():
    boxes = tf.constant([[[0.1, 0.1, 0.2, 0.2], [0.12, 0.13, 0.3, 0.3],
                          [0.9, 0.9, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1]]])
    labels = tf.constant([[0, 2, 1, -1]])
    best = tf.constant([[4, 4, 3, 4]])
    out = assign.assign_level(boxes, labels, best, [3, 4, 5], (2, 2), 3)
    resp = out["responsible"].numpy()
    assert resp.sum() == 2 and resp[0, 0, 0, 1] == 1 and resp[0, 1, 1, 0] == 1
    np.testing.assert_allclose(out["boxes"][0, 0, 0, 1], [0.12, 0.13, 0.3, 0.3])
    np.testing.assert_array_equal(out["classes"][0, 0, 0, 1], [1, 0, 1])
    np.testing.assert_array_equal(out["classes"][0, 1, 1, 0], [0, 1, 0])
