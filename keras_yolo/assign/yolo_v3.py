"""YOLOv3 target assignment: one prior per truth, the best of all levels.

Each truth is given to the single prior (anchor) whose shape overlaps it
most, among all the anchors of all levels (the seed's
`1^obj = max(IOU^truth_anchor)`, darknet's `best_n` over `l.total`): the
level that owns that anchor (through its mask) makes the truth's cell and
that anchor responsible; the other levels do nothing with it. Predictions
whose decoded box overlaps any truth by more than `ignore_thresh` are
ignored for objectness (`ignore_mask`).

Everything is vectorised over images and truths (fixed shapes, masks,
scatter), so it runs in-graph under XLA.
"""

import tensorflow as tf


def shape_iou(wh1, wh2):
    """IoU of boxes of sizes `wh1` and `wh2` sharing one centre.

    Args:
        wh1: `(..., 2)` widths and heights.
        wh2: `(..., 2)`, broadcastable against `wh1`.

    Returns:
        `(...)` = min(w1, w2) min(h1, h2) / (w1 h1 + w2 h2 - min(w1, w2) min(h1, h2)),
        0 where both boxes are empty.

    Example:
        >>> shape_iou([[2., 2.]], [[1., 4.]])   # [1 * 2 / (4 + 4 - 2)] = [1/3]
    """
    wh1 = tf.convert_to_tensor(wh1, tf.float32)
    wh2 = tf.convert_to_tensor(wh2, tf.float32)
    inter = (tf.minimum(wh1[..., 0], wh2[..., 0])
             * tf.minimum(wh1[..., 1], wh2[..., 1]))
    union = wh1[..., 0] * wh1[..., 1] + wh2[..., 0] * wh2[..., 1] - inter
    return tf.math.divide_no_nan(inter, union)


def best_anchor(truth_wh, anchors):
    """Index of the best of all anchors for each truth, by `shape_iou`.

    Args:
        truth_wh: `(B, M, 2)` truth sizes, in the units of `anchors`.
        anchors: `(K, 2)` all anchors of all levels (darknet's `l.total`).

    Returns:
        `(B, M)` int32 in `[0, K)`; ties go to the lowest index (darknet's
        strict `iou > best_iou` scan).
    """
    ious = shape_iou(truth_wh[:, :, None, :], anchors[None, None, :, :])
    return _first_argmax(ious)


def _first_argmax(values):
    """argmax over the last axis, the lowest index among equal maxima."""
    count = tf.shape(values)[-1]
    is_max = values >= tf.reduce_max(values, axis=-1, keepdims=True)
    return tf.reduce_min(tf.where(is_max, tf.range(count), count), axis=-1)


def _mask_lookup(anchor_index, mask):
    """Position of `anchor_index` in `mask` (the level's anchors), or -1."""
    size = len(mask)
    hit = tf.equal(anchor_index[..., None], tf.constant(mask, tf.int32))
    position = tf.reduce_sum(tf.cast(hit, tf.int32) * tf.range(size), -1)
    return tf.where(tf.reduce_any(hit, -1), position, -1)


def assign_level(boxes, labels, anchor_index, mask, grid_shape, num_classes):
    """Targets of one level from the truths whose best anchor it owns.

    Args:
        boxes: `(B, M, 4)` truths, `rel_center_xywh`.
        labels: `(B, M)` int32, -1 for padding.
        anchor_index: `(B, M)` best anchor of each truth (`best_anchor`).
        mask: this level's anchors, as indices into all anchors.
        grid_shape: `(H, W)`, ints or scalar int32 tensors.
        num_classes: C.

    Returns:
        dict of
        - `"responsible"`: `(B, H, W, A)` float32, 1 where a truth is assigned.
        - `"boxes"`: `(B, H, W, A, 4)` the assigned truth (`rel_center_xywh`);
          when several truths fall on one cell and anchor, the last one
          (darknet overwrites in truth order).
        - `"classes"`: `(B, H, W, A, C)` float32, the union of the classes of
          every truth assigned there (darknet's `delta_yolo_class` adds the
          later truths' classes to the first one's one-hot).

    The cell of a truth is `(floor(y H), floor(x W))`, clipped to the grid
    (a centre at exactly 1.0 falls in the last cell).
    """
    height, width = grid_shape
    num_anchors = len(mask)
    # Static sizes when known (a fixed padding), run-time ones otherwise
    # (`padded_batch`, a relaxed retrace): both give the same graph values.
    batch, max_truths = boxes.shape[0], boxes.shape[1]
    if batch is None:
        batch = tf.shape(boxes)[0]
    if max_truths is None:
        max_truths = tf.shape(boxes)[1]
    position = _mask_lookup(anchor_index, mask)
    assigned = (labels >= 0) & (position >= 0)
    col = tf.cast(tf.floor(boxes[..., 0] * tf.cast(width, tf.float32)),
                  tf.int32)
    row = tf.cast(tf.floor(boxes[..., 1] * tf.cast(height, tf.float32)),
                  tf.int32)
    col = tf.clip_by_value(col, 0, width - 1)
    row = tf.clip_by_value(row, 0, height - 1)
    slot = (row * width + col) * num_anchors + tf.maximum(position, 0)
    # A truth is overwritten by any later truth of its image on its slot.
    later = tf.range(max_truths)[None, :] > tf.range(max_truths)[:, None]
    same = (slot[:, :, None] == slot[:, None, :]) & assigned[:, None, :]
    overwritten = tf.reduce_any(same & later[None], axis=-1)
    kept = assigned & ~overwritten

    cells = height * width * num_anchors
    flat = tf.range(batch)[:, None] * cells + slot
    flat = tf.reshape(tf.where(assigned, flat, 0), [-1, 1])
    total = batch * cells

    def scatter(values, keep):
        values = tf.cast(values, tf.float32) * tf.cast(keep, tf.float32)[..., None]
        values = tf.reshape(values, [-1, values.shape[-1]])
        out = tf.scatter_nd(flat, values, [total, values.shape[-1]])
        return tf.reshape(out, [batch, height, width, num_anchors, -1])

    one_hot = tf.one_hot(tf.maximum(labels, 0), num_classes)
    responsible = scatter(tf.ones_like(boxes[..., :1]), kept)[..., 0]
    return {
        "responsible": responsible,
        "boxes": scatter(boxes, kept),
        "classes": tf.minimum(scatter(one_hot, assigned), 1.0),
    }


def best_truth(pred_boxes, truth_boxes, labels):
    """Best overlapping truth of every predicted box.

    Args:
        pred_boxes: `(B, N, 4)` decoded predictions, `rel_center_xywh`.
        truth_boxes: `(B, M, 4)` truths, `rel_center_xywh`.
        labels: `(B, M)`, -1 for padding.

    Returns:
        `(best_iou (B, N), best_index (B, N))`: the largest IoU with a real
        truth (0 when there is none) and the lowest index reaching it.
    """
    ious = pairwise_iou(pred_boxes, truth_boxes)
    ious = tf.where((labels >= 0)[:, None, :], ious, 0.0)
    return tf.reduce_max(ious, axis=-1), _first_argmax(ious)


def pairwise_iou(boxes1, boxes2):
    """IoU of `(B, N, 4)` x `(B, M, 4)` `rel_center_xywh` boxes -> `(B, N, M)`.

    Computed as darknet's `box_iou` (overlap of the centre-size intervals),
    in float32.
    """
    b1 = boxes1[:, :, None, :]
    b2 = boxes2[:, None, :, :]

    def overlap(c1, s1, c2, s2):
        return (tf.minimum(c1 + s1 / 2, c2 + s2 / 2)
                - tf.maximum(c1 - s1 / 2, c2 - s2 / 2))

    ow = overlap(b1[..., 0], b1[..., 2], b2[..., 0], b2[..., 2])
    oh = overlap(b1[..., 1], b1[..., 3], b2[..., 1], b2[..., 3])
    inter = tf.where((ow > 0) & (oh > 0), ow * oh, 0.0)
    union = b1[..., 2] * b1[..., 3] + b2[..., 2] * b2[..., 3] - inter
    return tf.math.divide_no_nan(inter, union)


def ignore_mask(best_iou, ignore_thresh):
    """1 where a prediction overlaps some truth by more than `ignore_thresh`.

    Such predictions, unless responsible for a truth, get no objectness loss
    (the seed: "not the best but overlaps a ground truth object by more than
    some threshold: we ignore the prediction").
    """
    return tf.cast(best_iou > ignore_thresh, tf.float32)
