"""YOLOv2 target assignment: one responsible anchor per truth, in-graph.

A truth is assigned to the grid cell that holds its centre, and in that cell
to the anchor whose shape, centred on the truth, overlaps it most (the seed's
`1^obj = max(IOU^truth_anchor)`, darknet's `[region] bias_match=1`). With
`bias_match=False` darknet compares the *predicted* box shapes of the cell's
anchors instead.

When two truths fall on the same cell and anchor the later row wins, as in
darknet's `forward_region_layer` (it writes the deltas truth after truth).

Built from `keras_yolo.assign.matching` (centre cells, `best_anchor`,
`scatter_slots(keep="last")`); vectorized over images and truths and
XLA-compilable. The batch size, the number of truths M
and the grid size may be unknown when the step is traced (a `padded_batch`
pipeline, Keras' relaxed retracing): static sizes are used when known, and
`tf.shape` otherwise.
"""

import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.assign import matching

# darknet's region_layer.c reads at most 30 truths per image.
DARKNET_MAX_TRUTHS = 30


def truths_in_cells(boxes, labels, bounding_box_format, grid_shape, stride,
                    darknet_truth_list=False):
    """Ground truth in relative centre form and the cell of each truth.

    Args:
        boxes: `(B, M, 4)` in `bounding_box_format`.
        labels: `(B, M)` int, `-1` for padding.
        bounding_box_format: format of `boxes`; pixel formats are relative to
            an image of `grid_shape * stride` pixels.
        grid_shape: `(H, W)` of the output grid (Python ints, or scalar
            int32 tensors when the grid is only known at run time).
        stride: input pixels per grid cell.
        darknet_truth_list: reproduce how darknet reads its truth list: a row
            whose centre x is exactly 0 ends the list, and only the first 30
            truths of an image are read.

    Returns:
        dict with `rel` `(B, M, 4)` rel_center_xywh float32, `valid` `(B, M)`
        bool, `cell_x`, `cell_y` `(B, M)` int32 (the centre's cell, clipped
        to the grid: a centre at exactly 1.0 belongs to the last cell).
    """
    height, width = grid_shape
    boxes = tf.cast(boxes, tf.float32)
    rel = box_ops.convert(boxes, bounding_box_format, "rel_center_xywh",
                          image_shape=(height * stride, width * stride))
    valid = tf.convert_to_tensor(labels) >= 0
    if darknet_truth_list:
        # `if(!truth.x) break;` and `for(t = 0; t < 30; ++t)`.
        not_end = tf.logical_or(tf.logical_not(valid), rel[..., 0] != 0.0)
        valid = valid & tf.cast(tf.math.cumprod(tf.cast(not_end, tf.int32),
                                                axis=1), tf.bool)
        rank = tf.cumsum(tf.cast(valid, tf.int32), axis=1)
        valid = valid & (rank <= DARKNET_MAX_TRUTHS)
    cell_y, cell_x = matching.centre_cells(rel[..., :2], grid_shape)
    return {"rel": rel, "valid": valid, "cell_x": cell_x, "cell_y": cell_y}


def scatter_to_grid(values, valid, cell_y, cell_x, anchor, grid_shape,
                    num_anchors):
    """Writes per-truth rows onto the `(H, W, A)` grid, the last truth winning.

    Args:
        values: `(B, M, F)` per-truth features.
        valid: `(B, M)` bool, rows to write.
        cell_y, cell_x, anchor: `(B, M)` int32 destination of each row.
        grid_shape: `(H, W)`.
        num_anchors: A.

    Returns:
        `(B, H, W, A, F)` with the written rows and zeros elsewhere, and
        `(B, H, W, A)` float32 mask of the written slots.
    """
    height, width = grid_shape
    slot = (cell_y * width + cell_x) * num_anchors + anchor
    written, mask = matching.scatter_slots(
        values, slot, valid, height * width * num_anchors, keep="last")
    shape = [-1, height, width, num_anchors]
    return (tf.reshape(written, shape + [values.shape[-1]]),
            tf.reshape(mask, shape))


def assign(boxes, labels, anchors, grid_shape, stride,
           bounding_box_format="rel_center_xywh", bias_match=True,
           predicted_wh=None, darknet_truth_list=False):
    """YOLOv2 targets on the `(B, H, W, A)` grid.

    Args:
        boxes: `(B, M, 4)` truth boxes in `bounding_box_format`.
        labels: `(B, M)` int, `-1` for padding.
        anchors: `(A, 2)` anchor `(w, h)` in grid cells.
        grid_shape: `(H, W)` Python ints (or int32 scalars when dynamic).
        stride: input pixels per cell.
        bias_match: choose the anchor by anchor shape (True) or by the
            predicted box shape in the truth's cell (False, needs
            `predicted_wh`).
        predicted_wh: `(B, H, W, A, 2)` predicted sizes in grid cells.
        darknet_truth_list: see `truths_in_cells`.

    Returns:
        dict of `(B, H, W, A, ...)` tensors: `responsible` mask, `truth`
        (the assigned truth, rel_center_xywh), `label` (int32, -1 where no
        truth), and the per-truth `rel`, `valid` `(B, M, ...)` for IoU-based
        ignoring.

    Example:
        >>> t = assign(y["boxes"], y["labels"], anchors_in_cells, (13, 13), 32)
        >>> t["responsible"].shape   # (B, 13, 13, A)
    """
    height, width = grid_shape
    anchors = tf.cast(tf.convert_to_tensor(anchors), tf.float32)
    num_anchors = anchors.shape[0]
    truth = truths_in_cells(boxes, labels, bounding_box_format, grid_shape,
                            stride, darknet_truth_list)
    rel, valid = truth["rel"], truth["valid"]
    cell_y, cell_x = truth["cell_y"], truth["cell_x"]
    grid_scale = tf.cast(tf.stack([width, height]), tf.float32)
    truth_wh = rel[..., 2:] * grid_scale  # grid cells
    if bias_match:
        anchor = matching.best_anchor(truth_wh, anchors)
    else:
        if predicted_wh is None:
            raise ValueError("`bias_match=False` needs `predicted_wh`.")
        cells = tf.stack([cell_y, cell_x], axis=-1)
        in_cell = tf.gather_nd(tf.cast(predicted_wh, tf.float32), cells,
                               batch_dims=1)  # (B, M, A, 2)
        anchor = matching.best_anchor(truth_wh, in_cell)
    label = tf.cast(tf.convert_to_tensor(labels), tf.float32)[..., None]
    values = tf.concat([rel, label + 1.0], axis=-1)  # +1: empty slots read -1
    grid, responsible = scatter_to_grid(values, valid, cell_y, cell_x, anchor,
                                        grid_shape, num_anchors)
    return {
        "responsible": responsible,
        "truth": grid[..., :4],
        "label": tf.cast(tf.round(grid[..., 4]), tf.int32) - 1,
        "rel": rel,
        "valid": valid,
    }
