"""keras_yolo.assign.matching against numpy translations of the references."""

import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.assign import matching
import references


def darknet_best_n(ious):
    """darknet's scan (region_layer.c / yolo_layer.c), line for line."""
    best_iou, best_n = 0.0, 0
    for n, iou in enumerate(ious):
        if iou > best_iou:
            best_iou, best_n = iou, n
    return best_n


def test_shape_iou_hand_value_and_random():
    np.testing.assert_allclose(matching.shape_iou([[2.0, 2.0]], [[1.0, 4.0]]), [2 / 6], rtol=1e-6)
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 5, (200, 2)), rng.uniform(0, 5, (7, 2))
    got = matching.shape_iou(a[:, None].astype(np.float32), b.astype(np.float32))
    np.testing.assert_allclose(got, references.shape_iou(a[:, None], b), rtol=1e-5, atol=1e-7)
    # Two empty boxes: 0, not NaN.
    assert matching.shape_iou([0.0, 0.0], [0.0, 0.0]).numpy() == 0.0


def test_first_argmax_takes_the_lowest_of_equal_maxima():
    values = np.array([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0], [5.0, 1.0, 5.0, 5.0]])
    np.testing.assert_array_equal(matching.first_argmax(values), [1, 0, 0])
    rng = np.random.default_rng(1)
    ties = rng.integers(0, 3, (500, 6)).astype(np.float32)
    np.testing.assert_array_equal(matching.first_argmax(ties), np.argmax(ties, -1))


def test_best_anchor_is_darknets_scan_with_ties_and_no_overlap():
    rng = np.random.default_rng(2)
    # Integer sizes make exact ties between anchors common; a zero truth
    # overlaps nothing (darknet keeps best_n = 0).
    anchors = rng.integers(1, 4, (9, 2)).astype(np.float32)
    anchors[4] = anchors[1]  # a duplicated anchor: a certain tie
    truths = rng.integers(0, 5, (3, 40, 2)).astype(np.float32)
    got = matching.best_anchor(truths, anchors).numpy()
    ious = references.shape_iou(truths[..., None, :], anchors)
    expected = np.apply_along_axis(darknet_best_n, -1, ious)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int32
    assert (got[truths.min(-1) == 0] == 0).all()
    # Per-truth candidates (v2's bias_match=0: the predicted sizes of the cell).
    candidates = rng.integers(0, 4, (3, 40, 5, 2)).astype(np.float32)
    got = matching.best_anchor(truths, candidates).numpy()
    ious = references.shape_iou(truths[..., None, :], candidates)
    np.testing.assert_array_equal(got, np.apply_along_axis(darknet_best_n, -1, ious))


def test_best_anchor_ignores_nan_candidates_like_darknet():
    # `nan > best_iou` is false in C: a NaN candidate never wins.
    got = matching.best_anchor([[2.0, 2.0]], [[np.nan, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(got, [1])


def test_centre_cells_floor_and_clip():
    xy = np.array([[0.5, 1.0], [0.0, 0.0], [0.999, 0.3], [1.7, -0.2], [1e12, 0.49]], np.float32)
    row, col = matching.centre_cells(xy, (10, 13))
    np.testing.assert_array_equal(col, np.clip(np.floor(xy[:, 0] * 13), 0, 12))
    np.testing.assert_array_equal(row, np.clip(np.floor(xy[:, 1] * 10), 0, 9))
    assert row.dtype == tf.int32 and col.dtype == tf.int32


def test_centre_cells_with_run_time_grid():
    fn = tf.function(lambda xy, h, w: matching.centre_cells(xy, (h, w)),
                     input_signature=[tf.TensorSpec([None, 2]), tf.TensorSpec([], tf.int32),
                                      tf.TensorSpec([], tf.int32)])
    row, col = fn(tf.constant([[0.25, 0.75]]), tf.constant(4), tf.constant(8))
    assert (int(row[0]), int(col[0])) == (3, 2)


def test_best_truth_iou_matches_darknet_box_iou_and_skips_padding():
    rng = np.random.default_rng(3)
    pred = np.concatenate([rng.uniform(0, 1, (2, 30, 2)), rng.uniform(0.01, 0.5, (2, 30, 2))], -1)
    truth = np.concatenate([rng.uniform(0, 1, (2, 6, 2)), rng.uniform(0.01, 0.5, (2, 6, 2))], -1)
    valid = np.array([[True] * 4 + [False] * 2, [False] * 6])
    truth[0, 0] = truth[0, 1]  # a duplicate truth: the lower index is reported
    best, index = matching.best_truth_iou(pred.astype(np.float32), truth.astype(np.float32), valid)
    ious = references.darknet_box_iou(pred[:, :, None], truth[:, None])
    ious = np.where(valid[:, None], ious, 0.0)
    np.testing.assert_allclose(best, ious.max(-1), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(index[0], np.argmax(ious[0], -1))
    np.testing.assert_array_equal(best[1], 0.0)  # an image without truths


@pytest.mark.parametrize("keep", ["first", "last", "sum"])
def test_scatter_slots_against_a_python_loop(keep):
    rng = np.random.default_rng(4)
    batch, rows, slots, features = 3, 12, 5, 2
    values = rng.normal(size=(batch, rows, features)).astype(np.float32)
    slot = rng.integers(0, slots, (batch, rows)).astype(np.int32)
    valid = rng.uniform(size=(batch, rows)) < 0.7
    values[~valid] = np.nan  # padded rows may hold anything
    expected = np.zeros((batch, slots, features), np.float32)
    mask = np.zeros((batch, slots), np.float32)
    for b in range(batch):
        for m in range(rows):
            if not valid[b, m]:
                continue
            s = slot[b, m]
            if keep == "first" and mask[b, s]:
                continue
            expected[b, s] = expected[b, s] + values[b, m] if keep == "sum" else values[b, m]
            mask[b, s] = 1.0
    grid, got_mask = matching.scatter_slots(values, slot, valid, slots, keep=keep)
    np.testing.assert_allclose(grid, expected, rtol=1e-6)
    np.testing.assert_array_equal(got_mask, mask)


def test_scatter_slots_compiles_with_xla_and_run_time_sizes():
    fn = tf.function(lambda v, s, ok: matching.scatter_slots(v, s, ok, 4, keep="last"),
                     jit_compile=True)
    values = tf.constant([[[1.0], [2.0], [3.0]]])
    grid, mask = fn(values, tf.constant([[2, 2, 0]]), tf.constant([[True, True, False]]))
    np.testing.assert_array_equal(grid[0, :, 0], [0.0, 0.0, 2.0, 0.0])
    np.testing.assert_array_equal(mask[0], [0.0, 0.0, 1.0, 0.0])
    dynamic = tf.function(lambda v, s, ok: matching.scatter_slots(v, s, ok, 4, keep="first"),
                          input_signature=[tf.TensorSpec([None, None, 1]),
                                           tf.TensorSpec([None, None], tf.int32),
                                           tf.TensorSpec([None, None], tf.bool)])
    grid, _ = dynamic(values, tf.constant([[2, 2, 0]]), tf.constant([[True, True, False]]))
    np.testing.assert_array_equal(grid[0, :, 0], [0.0, 0.0, 1.0, 0.0])


def test_scatter_slots_refuses_an_unknown_rule():
    with pytest.raises(ValueError, match="keep"):
        matching.scatter_slots([[[1.0]]], [[0]], [[True]], 1, keep="max")
