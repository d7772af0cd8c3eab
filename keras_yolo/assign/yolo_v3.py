"""YOLOv3 target assignment: one prior per truth, the best of all levels.

Each truth is given to the single prior (anchor) whose shape overlaps it
most, among all the anchors of all levels (the seed's
`1^obj = max(IOU^truth_anchor)`, darknet's `best_n` over `l.total`): the
level that owns that anchor (through its mask) makes the truth's cell and
that anchor responsible; the other levels do nothing with it. Predictions
whose decoded box overlaps any truth by more than `ignore_thresh` are
ignored for objectness (`ignore_mask`).

Built from `keras_yolo.assign.matching` (`best_anchor` with darknet's tie
rule, centre cells, `scatter_slots`); vectorised over images and truths, so
it runs in-graph under XLA.
"""

import tensorflow as tf

from keras_yolo.assign import matching



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
    position = _mask_lookup(anchor_index, mask)
    assigned = (labels >= 0) & (position >= 0)
    row, col = matching.centre_cells(boxes[..., :2], grid_shape)
    slot = (row * width + col) * num_anchors + tf.maximum(position, 0)
    slots = height * width * num_anchors

    def scatter(values, keep):
        grid, written = matching.scatter_slots(
            tf.cast(values, tf.float32), slot, assigned, slots, keep=keep)
        return tf.reshape(grid, [-1, height, width, num_anchors,
                                 values.shape[-1]]), written

    written, responsible = scatter(boxes, "last")
    classes, _ = scatter(tf.one_hot(tf.maximum(labels, 0), num_classes), "sum")
    return {
        "responsible": tf.reshape(responsible, [-1, height, width,
                                                num_anchors]),
        "boxes": written,
        "classes": tf.minimum(classes, 1.0),
    }


def ignore_mask(best_iou, ignore_thresh):
    """1 where a prediction overlaps some truth by more than `ignore_thresh`.

    Such predictions, unless responsible for a truth, get no objectness loss
    (the seed: "not the best but overlaps a ground truth object by more than
    some threshold: we ignore the prediction").
    """
    return tf.cast(best_iou > ignore_thresh, tf.float32)
