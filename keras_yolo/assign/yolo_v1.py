"""YOLOv1 target assignment: one object per grid cell, one responsible box.

The seed (YOLOv1): "an object is assigned to the grid cell its centre falls
in", and "we assign one predictor to be responsible for predicting an object
based on which prediction has the highest current IOU with the ground truth".
Darknet's `[detection]` layer (pjreddie, 2018) fixes what the paper leaves
open; this module does exactly what it does:

* Cell: column `floor(x * S)`, row `floor(y * S)` of the box centre
  (`rel_center_xywh`), clipped to `[0, S - 1]` (darknet indexes out of the
  grid for a centre at exactly 1.0).
* Several objects in one cell: the cell keeps ONE, the first in `y_true`'s
  row order; the others get no target at all (darknet's `fill_truth_region`
  keeps the first it reads, `if (truth[index]) continue;`, after shuffling
  the label file, so darknet's choice is random; ours is deterministic).
* Units: `x, y` are the centre's offset inside its cell, in cell units
  `[0, 1)`; `w, h` are fractions of the image.
* Responsible predictor `j` of a cell with an object: the highest IoU
  between the predicted box and the truth; ties go to the lowest `j`. When
  no prediction overlaps the truth (all IoUs 0), the predictor with the
  smallest distance `sqrt(dx² + dy² + dw² + dh²)` between the boxes
  `(x / S, y / S, w, h)` (darknet's `box_rmse` fallback); ties again go to
  the lowest `j`.
* Class ids `>= num_classes` keep the object but give an all-zero class
  target (darknet: `if (id < classes) truth[index + id] = 1;`);
  `YoloV1Loss` never passes them: `keras_yolo.assign.groundtruth.sanitize`
  masks such rows first.
* B and M may be unknown until run time (`tf.shape`); S is static.

All functions are vectorised over images, objects and cells (masks, one-hot
matrices, no Python loop over boxes) and compile with XLA.
"""

import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.assign import matching


def cell_targets(boxes, labels, grid_size, num_classes):
    """Per-cell YOLOv1 targets from padded ground truth.

    Args:
        boxes: `(B, M, 4)` `rel_center_xywh` boxes.
        labels: `(B, M)` int class ids, `-1` for padding.
        grid_size: S.
        num_classes: C.

    Returns:
        dict of
        `"object_mask"`: `(B, S, S)` float32, 1 where a cell holds an object
            (the seed's 1^obj_i);
        `"boxes"`: `(B, S, S, 4)` `[x, y, w, h]`, `x, y` offsets inside the
            cell (cell units), `w, h` fractions of the image; 0 elsewhere;
        `"classes"`: `(B, S, S, C)` one-hot class of the kept object.

    Example:
        >>> t = cell_targets([[[0.5, 0.2, 0.3, 0.1]]], [[1]], 7, 3)
        >>> t["boxes"][0, 1, 3]   # [0.5, 0.4, 0.3, 0.1]: cell row 1, col 3
    """
    boxes = tf.cast(boxes, tf.float32)
    labels = tf.cast(labels, tf.int32)
    s = grid_size
    valid = labels >= 0                                           # (B, M)
    # Padded rows may hold anything (even NaN): zero them before any product.
    boxes = tf.where(valid[..., None], boxes, 0.0)
    row, col = matching.centre_cells(boxes[..., :2], (s, s))
    offsets = boxes[..., :2] * s - tf.cast(tf.stack([col, row], -1),
                                           tf.float32)
    values = tf.concat(
        [offsets, boxes[..., 2:4], tf.one_hot(labels, num_classes)], axis=-1)
    # The first object of a cell keeps it (darknet's `if (truth[index])`).
    per_cell, mask = matching.scatter_slots(values, row * s + col, valid,
                                            s * s, keep="first")
    batch = tf.shape(boxes)[0]
    per_cell = tf.reshape(per_cell, [batch, s, s, 4 + num_classes])
    mask = tf.reshape(mask, [batch, s, s])
    return {"object_mask": mask, "boxes": per_cell[..., :4],
            "classes": per_cell[..., 4:]}


def responsible_predictor(pred_boxes, truth_boxes, grid_size):
    """Chooses the responsible box of each cell (the seed's 1^obj_ij).

    Args:
        pred_boxes: `(B, S, S, Bx, 4)` predicted `[x, y, w, h]` (cell
            offsets, image fractions).
        truth_boxes: `(B, S, S, 4)` targets in the same units.
        grid_size: S.

    Returns:
        `(one_hot (B, S, S, Bx) float32, iou (B, S, S, Bx))`: the chosen
        predictor (highest IoU, lowest index on ties; smallest box distance
        when no IoU is positive) and every predictor's IoU with the truth
        (darknet's `box_iou`, `keras_yolo.boxes.iou(convention="darknet")`).
    """
    scale = tf.constant([1.0 / grid_size, 1.0 / grid_size, 1.0, 1.0])
    pred = pred_boxes * scale
    truth = (truth_boxes * scale)[..., None, :]
    iou = box_ops.iou(pred, truth, "rel_center_xywh", "iou",
                      convention="darknet")
    distance = tf.reduce_sum(tf.square(pred - truth), axis=-1)
    by_iou = matching.first_argmax(iou)
    by_distance = matching.first_argmax(-distance)
    overlaps = tf.reduce_max(iou, axis=-1) > 0
    best = tf.where(overlaps, by_iou, by_distance)
    return tf.one_hot(best, pred_boxes.shape[-2], dtype=tf.float32), iou
