"""YOLOv2 target assignment: one responsible anchor per truth, in-graph.

A truth is assigned to the grid cell that holds its centre, and in that cell
to the anchor whose shape, centred on the truth, overlaps it most (the seed's
`1^obj = max(IOU^truth_anchor)`, darknet's `[region] bias_match=1`). With
`bias_match=False` darknet compares the *predicted* box shapes of the cell's
anchors instead.

When two truths fall on the same cell and anchor the later row wins, as in
darknet's `forward_region_layer` (it writes the deltas truth after truth).

Everything is vectorized over images and truths (a `(B, M, M)` comparison and
one `scatter_nd`) and XLA-compilable. The batch size, the number of truths M
and the grid size may be unknown when the step is traced (a `padded_batch`
pipeline, Keras' relaxed retracing): static sizes are used when known, and
`tf.shape` otherwise.
"""

import tensorflow as tf

from keras_yolo import boxes as box_ops

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
    grid_x, grid_y = (rel[..., 0] * tf.cast(width, tf.float32),
                      rel[..., 1] * tf.cast(height, tf.float32))
    cell_x = tf.clip_by_value(tf.cast(tf.floor(grid_x), tf.int32), 0, width - 1)
    cell_y = tf.clip_by_value(tf.cast(tf.floor(grid_y), tf.int32), 0, height - 1)
    return {"rel": rel, "valid": valid, "cell_x": cell_x, "cell_y": cell_y}


def shape_iou(wh1, wh2):
    """IoU of two boxes sharing a centre: `(..., 2)` sizes -> `(...)`."""
    inter = (tf.minimum(wh1[..., 0], wh2[..., 0])
             * tf.minimum(wh1[..., 1], wh2[..., 1]))
    union = wh1[..., 0] * wh1[..., 1] + wh2[..., 0] * wh2[..., 1] - inter
    return tf.math.divide_no_nan(inter, union)


def best_anchor(truth_wh, candidate_wh):
    """Index of the candidate shape overlapping each truth most.

    Args:
        truth_wh: `(B, M, 2)` truth sizes.
        candidate_wh: `(A, 2)` anchor sizes or `(B, M, A, 2)` predicted sizes
            in the truth's cell, in the same units as `truth_wh`.

    Returns:
        `(B, M)` int32; ties and all-zero overlaps go to the lowest index,
        as darknet's strict `iou > best_iou` scan from `best_n = 0`.
    """
    iou = shape_iou(truth_wh[:, :, None, :], candidate_wh)
    return tf.argmax(iou, axis=-1, output_type=tf.int32)


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
    batch = tf.shape(values)[0]
    num_truths = values.shape[1]
    if num_truths is None:  # M known only at run time (padded_batch)
        num_truths = tf.shape(values)[1]
    slots = height * width * num_anchors
    slot = (cell_y * width + cell_x) * num_anchors + anchor
    # A row is overwritten when a later valid row targets the same slot.
    later = tf.linalg.band_part(tf.ones((num_truths, num_truths), tf.bool),
                                0, -1) & ~tf.eye(num_truths, dtype=tf.bool)
    same = (slot[:, :, None] == slot[:, None, :]) & valid[:, None, :]
    overwritten = tf.reduce_any(same & later[None], axis=-1)
    keep = valid & ~overwritten
    # Rows not kept go to one extra slot that is cut off afterwards, so the
    # kept slots are unique and scatter_nd's sum is an assignment.
    slot = tf.where(keep, slot, slots)
    image = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(slot))
    indices = tf.stack([image, slot], axis=-1)
    features = values.shape[-1]
    written = tf.scatter_nd(indices, values, tf.stack([batch, slots + 1,
                                                       features]))
    mask = tf.scatter_nd(indices, tf.cast(keep, tf.float32),
                         tf.stack([batch, slots + 1]))
    shape = [-1, height, width, num_anchors]
    return (tf.reshape(written[:, :slots], shape + [features]),
            tf.reshape(mask[:, :slots], shape))


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
        anchor = best_anchor(truth_wh, anchors)
    else:
        if predicted_wh is None:
            raise ValueError("`bias_match=False` needs `predicted_wh`.")
        cells = tf.stack([cell_y, cell_x], axis=-1)
        in_cell = tf.gather_nd(tf.cast(predicted_wh, tf.float32), cells,
                               batch_dims=1)  # (B, M, A, 2)
        anchor = best_anchor(truth_wh, in_cell)
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


def center_iou(boxes1, boxes2):
    """IoU of broadcastable `(..., 4)` centre-form boxes, as darknet's
    `box_iou` (no epsilon: 0 where the union is empty)."""
    x1, y1, w1, h1 = tf.unstack(boxes1, 4, axis=-1)
    x2, y2, w2, h2 = tf.unstack(boxes2, 4, axis=-1)
    inter_w = tf.minimum(x1 + w1 / 2, x2 + w2 / 2) - tf.maximum(x1 - w1 / 2,
                                                                x2 - w2 / 2)
    inter_h = tf.minimum(y1 + h1 / 2, y2 + h2 / 2) - tf.maximum(y1 - h1 / 2,
                                                                y2 - h2 / 2)
    inter = tf.maximum(inter_w, 0.0) * tf.maximum(inter_h, 0.0)
    return tf.math.divide_no_nan(inter, w1 * h1 + w2 * h2 - inter)


def best_truth_iou(pred_rel, truth_rel, valid):
    """Highest IoU of each prediction with any valid truth of its image.

    Args:
        pred_rel: `(B, N, 4)` predicted boxes, rel_center_xywh.
        truth_rel: `(B, M, 4)` truths, rel_center_xywh.
        valid: `(B, M)` bool.

    Returns:
        `(B, N)` float32, 0 for an image without truths.
    """
    iou = center_iou(pred_rel[:, :, None, :], truth_rel[:, None, :, :])
    iou = tf.where(valid[:, None, :], iou, 0.0)
    return tf.reduce_max(iou, axis=-1)
