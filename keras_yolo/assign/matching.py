"""Matching primitives every assigner is built from.

A truth is matched by its centre cell (`centre_cells`) and by the shape of
an anchor (`shape_iou`, `best_anchor`); predictions near a truth are found
by `best_truth_iou` (ignore masks); per-truth rows are written onto the grid
by `scatter_slots`, with the rule of the reference for two truths on one
slot. All are vectorised over images and truths, accept a batch size and a
truth count known only at run time, and compile with XLA.

Example:
    >>> row, col = centre_cells(boxes[..., :2], (13, 13))
    >>> anchor = best_anchor(boxes[..., 2:] * 13, anchors_in_cells)
    >>> slot = (row * 13 + col) * num_anchors + anchor
    >>> grid, mask = scatter_slots(values, slot, labels >= 0,
    ...                            13 * 13 * num_anchors, keep="last")
"""

import tensorflow as tf

from keras_yolo import boxes as box_ops

SCATTER_RULES = ("first", "last", "sum")


def shape_iou(wh1, wh2):
    """IoU of boxes of sizes `wh1` and `wh2` sharing one centre.

    Args:
        wh1: `(..., 2)` widths and heights.
        wh2: `(..., 2)`, broadcastable against `wh1`, same units.

    Returns:
        `(...)` float32 `min(w1, w2) min(h1, h2) / (w1 h1 + w2 h2 -
        min(w1, w2) min(h1, h2))`, 0 where the union is not positive (two
        empty boxes). This is darknet's `box_iou` of two boxes centred at
        the origin, as its assigners compare a truth with an anchor.

    Example:
        >>> shape_iou([[2., 2.]], [[1., 4.]])   # [2 / 6]
    """
    wh1 = tf.cast(tf.convert_to_tensor(wh1), tf.float32)
    wh2 = tf.cast(tf.convert_to_tensor(wh2), tf.float32)
    inter = (tf.minimum(wh1[..., 0], wh2[..., 0])
             * tf.minimum(wh1[..., 1], wh2[..., 1]))
    union = wh1[..., 0] * wh1[..., 1] + wh2[..., 0] * wh2[..., 1] - inter
    positive = union > 0
    return tf.where(positive, inter / tf.where(positive, union, 1.0), 0.0)


def first_argmax(values):
    """Lowest index of the maximum over the last axis, int32 `(...)`.

    `tf.argmax` does not promise which of equal maxima it returns; the
    references scan in order and keep the first.
    """
    values = tf.convert_to_tensor(values)
    count = tf.shape(values)[-1]
    is_max = values >= tf.reduce_max(values, axis=-1, keepdims=True)
    first = tf.reduce_min(tf.where(is_max, tf.range(count), count), axis=-1)
    return tf.minimum(first, count - 1)  # all-NaN rows: the last index


def best_anchor(truth_wh, candidate_wh):
    """Index of the candidate shape that overlaps each truth most.

    One tie rule, darknet's (`region_layer.c`, `yolo_layer.c` of pjreddie
    and AlexeyAB): `best_n = 0, best_iou = 0; if (iou > best_iou) ...` over
    the candidates in order. So the lowest index among equal maxima wins,
    and index 0 when no candidate overlaps (all IoUs 0, or NaN).

    Args:
        truth_wh: `(..., 2)` truth sizes.
        candidate_wh: `(K, 2)` anchor sizes, or `(..., K, 2)` one set of
            candidates per truth (e.g. the predicted sizes in its cell),
            in the units of `truth_wh`.

    Returns:
        `(...)` int32 in `[0, K)`.

    Example:
        >>> best_anchor([[3., 3.]], [[1., 1.], [3., 3.], [3., 3.]])   # [1]
    """
    truth_wh = tf.convert_to_tensor(truth_wh)
    overlap = shape_iou(truth_wh[..., None, :], candidate_wh)
    # `iou > best_iou` from 0: non-positive and NaN overlaps never win.
    overlap = tf.where(overlap > 0, overlap, 0.0)
    return first_argmax(overlap)


def centre_cells(xy, grid_shape):
    """Grid cell holding each centre.

    Args:
        xy: `(..., 2)` centres, fractions of the image (`rel_center_xywh`).
        grid_shape: `(H, W)`, Python ints or scalar int32 tensors.

    Returns:
        `(row, col)`, two int32 `(...)` tensors: `floor(y H)`, `floor(x W)`
        clipped to the grid (a centre at exactly 1.0, or outside the image,
        falls in the nearest border cell). Clipping happens before the cast,
        so no coordinate overflows int32.

    Example:
        >>> centre_cells([[0.5, 1.0]], (13, 13))   # ([12], [6])
    """
    height, width = grid_shape
    xy = tf.cast(tf.convert_to_tensor(xy), tf.float32)
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    col = tf.clip_by_value(tf.floor(xy[..., 0] * width), 0.0, width - 1.0)
    row = tf.clip_by_value(tf.floor(xy[..., 1] * height), 0.0, height - 1.0)
    return tf.cast(row, tf.int32), tf.cast(col, tf.int32)


def best_truth_iou(pred_boxes, truth_boxes, valid,
                   bounding_box_format="rel_center_xywh",
                   convention="darknet"):
    """Best overlap of every prediction with the real truths of its image.

    What the ignore rules of v2-v4 threshold: a prediction that overlaps a
    truth by more than `ignore_thresh` gets no "no object" loss.

    Args:
        pred_boxes: `(B, N, 4)` decoded predictions.
        truth_boxes: `(B, M, 4)` truths, same format.
        valid: `(B, M)` bool, False for padded rows.
        bounding_box_format: format of both.
        convention: the IoU convention of `keras_yolo.boxes.iou`
            (`"darknet"`: darknet's `box_iou`, v2/v3).

    Returns:
        `(best_iou (B, N) float32, best_index (B, N) int32)`: the largest
        IoU with a valid truth (0 for an image without truths) and the lowest
        truth index reaching it.

    Example:
        >>> best, index = best_truth_iou(pred, truths, labels >= 0)
        >>> ignored = best > 0.5
    """
    overlap = box_ops.iou(pred_boxes, truth_boxes, bounding_box_format,
                          variant="iou", pairwise=True, convention=convention)
    overlap = tf.where(tf.convert_to_tensor(valid)[:, None, :],
                       tf.cast(overlap, tf.float32), 0.0)
    return tf.reduce_max(overlap, axis=-1), first_argmax(overlap)


def _dimension(x, axis):
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def scatter_slots(values, slot, valid, num_slots, keep="last"):
    """Writes per-truth rows into per-image slots (cells times anchors).

    Args:
        values: `(B, M, F)` per-truth features.
        slot: `(B, M)` int32 destination in `[0, num_slots)`.
        valid: `(B, M)` bool, the rows to write.
        num_slots: S, an int or a scalar int32 tensor.
        keep: what a slot holds when several valid rows target it:
            `"last"` the last row (darknet's region and yolo layers write
            truth after truth), `"first"` the first row (darknet's detection
            layer: `if (truth[index]) continue;`), `"sum"` the sum of all
            (e.g. a union of one-hot classes).

    Returns:
        `(grid (B, S, F), mask (B, S) float32)`: the written values (0
        elsewhere) and 1.0 on the slots written.

    Example:
        >>> grid, mask = scatter_slots([[[1.], [2.]]], [[3, 3]], [[True, True]],
        ...                            5, keep="first")
        >>> grid[0, 3], mask[0]   # [1.], [0, 0, 0, 1, 0]
    """
    if keep not in SCATTER_RULES:
        raise ValueError(
            f"`keep` must be one of {SCATTER_RULES}; got {keep!r}.")
    values = tf.convert_to_tensor(values)
    slot = tf.cast(slot, tf.int32)
    valid = tf.cast(valid, tf.bool)
    batch = _dimension(values, 0)
    num_rows = _dimension(values, 1)
    written = valid
    if keep != "sum":
        rows = tf.range(num_rows)
        if keep == "last":
            beats = rows[None, :] > rows[:, None]   # [m, m']: m' after m
        else:
            beats = rows[None, :] < rows[:, None]   # [m, m']: m' before m
        same = (slot[:, :, None] == slot[:, None, :]) & valid[:, None, :]
        written = valid & ~tf.reduce_any(same & beats[None], axis=-1)
    # Rows not written go to one spare slot that is cut off afterwards, so
    # the written slots are unique and scatter_nd's sum is an assignment.
    target = tf.where(written, slot, num_slots)
    image = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(target))
    indices = tf.stack([image, target], axis=-1)
    features = values.shape[-1]
    grid = tf.scatter_nd(
        indices, tf.where(written[..., None], values, tf.zeros_like(values)),
        tf.stack([batch, num_slots + 1, features]))
    mask = tf.scatter_nd(indices, tf.cast(written, tf.float32),
                         tf.stack([batch, num_slots + 1]))
    mask = tf.minimum(mask[:, :num_slots], 1.0)
    return grid[:, :num_slots], mask
