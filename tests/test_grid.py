"""keras_yolo.grid: the anchor-grid decode against the formula in numpy."""

import numpy as np
import pytest
import tensorflow as tf

from keras_yolo import grid
from references import sigmoid


def np_decode(raw, anchors, stride, scale_x_y=1.0, size="exp", units="relative"):
    """float64 formula of the module docstring, cell by cell."""
    batch, height, width, num_anchors, _ = raw.shape
    out = np.zeros(raw.shape[:4] + (4,))
    for row in range(height):
        for col in range(width):
            for a in range(num_anchors):
                t = raw[:, row, col, a].astype(np.float64)
                off = scale_x_y * sigmoid(t[:, :2]) - (scale_x_y - 1) / 2
                if size == "exp":
                    f = np.exp(np.clip(t[:, 2:4], -grid.MAX_LOG_SCALE, grid.MAX_LOG_SCALE))
                else:
                    f = (2 * sigmoid(t[:, 2:4])) ** 2
                wh = f * np.asarray(anchors[a], np.float64)
                xy = np.stack([col + off[:, 0], row + off[:, 1]], -1)
                if units == "pixels":
                    out[:, row, col, a] = np.concatenate([xy * stride, wh], -1)
                else:
                    image = np.array([width, height]) * stride
                    out[:, row, col, a] = np.concatenate(
                        [xy / [width, height], wh / image], -1)
    return out


ANCHORS = [[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]]


@pytest.mark.parametrize("scale_x_y,size,units", [
    (1.0, "exp", "relative"),             # v2, v3
    (1.2, "exp", "relative"),             # v4
    (2.0, "square_sigmoid", "pixels"),    # v5
    (2.0, "square_sigmoid", "relative"),
])
def test_decode_boxes_matches_the_formula(scale_x_y, size, units):
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 2, (2, 5, 7, 3, 8)).astype(np.float32)
    raw[0, 0, 0, 0, 2] = 60.0   # clipped to MAX_LOG_SCALE with "exp"
    got = grid.decode_boxes(tf.constant(raw), ANCHORS, 8, scale_x_y, size, units=units)
    np.testing.assert_allclose(got, np_decode(raw, ANCHORS, 8, scale_x_y, size, units),
                               rtol=2e-6, atol=1e-6)


def test_decode_level_activations_and_nan_to_zero():
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 2, (1, 2, 3, 3, 9)).astype(np.float32)
    out = grid.decode_level(tf.constant(raw), ANCHORS, 16, class_activation="softmax")
    probs = np.exp(raw[..., 5:]) / np.exp(raw[..., 5:]).sum(-1, keepdims=True)
    np.testing.assert_allclose(out["class_probs"], probs, rtol=1e-5)
    np.testing.assert_allclose(out["objectness"], sigmoid(raw[..., 4]), rtol=1e-5)
    out = grid.decode_level(tf.constant(raw), ANCHORS, 16)
    np.testing.assert_allclose(out["class_probs"], sigmoid(raw[..., 5:]), rtol=1e-5)
    raw[0, 1, 2, 0] = np.nan
    out = grid.decode_level(tf.constant(raw), ANCHORS, 16, scale_x_y=2.0, size="square_sigmoid",
                            units="pixels", nan_to_zero=True)
    # An empty box at the cell corner minus half a cell, zero scores.
    np.testing.assert_allclose(out["boxes"][0, 1, 2, 0], [(2 - 0.5) * 16, (1 - 0.5) * 16, 0, 0])
    assert out["objectness"][0, 1, 2, 0] == 0.0
    assert np.all(out["class_probs"][0, 1, 2, 0].numpy() == 0.0)


def test_decode_boxes_with_a_run_time_grid():
    fn = tf.function(lambda raw: grid.decode_boxes(raw, ANCHORS, 32),
                     input_signature=[tf.TensorSpec([None, None, None, 3, 6])])
    raw = np.zeros((1, 4, 6, 3, 6), np.float32)
    got = fn(raw)
    np.testing.assert_allclose(got[0, 3, 5, 1], [5.5 / 6, 3.5 / 4, 16 / 192, 30 / 128], rtol=1e-6)


def test_box_sizes_bounds_and_options():
    t = tf.constant([[100.0, -100.0]])
    np.testing.assert_allclose(grid.box_sizes(t, [[2.0, 3.0]]),
                               [[2 * np.exp(20.0), 3 * np.exp(-20.0)]], rtol=1e-6)
    np.testing.assert_allclose(grid.box_sizes(t, [[2.0, 3.0]], "square_sigmoid"), [[8.0, 0.0]])
    with pytest.raises(ValueError, match="size"):
        grid.box_sizes(t, [[2.0, 3.0]], "linear")
    with pytest.raises(ValueError, match="units"):
        grid.decode_boxes(tf.zeros([1, 1, 1, 1, 5]), [[1.0, 1.0]], 8, units="cells")


def test_level_list_and_level_anchors():
    assert grid.level_list(1.1, 3, "scale_x_y") == (1.1, 1.1, 1.1)
    with pytest.raises(ValueError, match="scale_x_y"):
        grid.level_list((1.0, 2.0), 3, "scale_x_y")
    flat, masks = grid.level_anchors([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], None, 2)
    assert masks == [[0, 1], [2, 3]] and flat.shape == (4, 2)
    flat, masks = grid.level_anchors([1, 2, 3, 4, 5, 6], [[2], [0, 1]], 2)
    np.testing.assert_array_equal(flat[masks[0]], [[5, 6]])
    with pytest.raises(ValueError, match="masks"):
        grid.level_anchors([1, 2, 3, 4], [[2], [0]], 2)
