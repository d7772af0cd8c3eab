"""YOLOv4 target assignment: the best anchor and every anchor above `iou_thresh`.

The seed's YOLOv4 rule (AlexeyAB darknet `src/yolo_layer.c`, the loop over
truths of `process_batch`):

    1obj_k = [k = argmax_k' IOU(anchor_k', truth)]  or  [IOU(anchor_k, truth) > iou_thresh]

where the IoU compares shapes only (both boxes centred at the origin), the
argmax runs over the anchors of every level (darknet's `l.total`, first
maximum on ties) and a truth lands in the cell that holds its centre,
`i = floor(x * W)`, `j = floor(y * H)` on each level. With `iou_thresh >= 1`
only the best anchor is responsible (YOLOv3's rule).

Built from `keras_yolo.assign.matching` (`shape_iou`, `best_anchor` with
darknet's tie rule, `centre_cells`). Everything is fixed-size tensor algebra
(no loop over boxes or images), so it runs under
`tf.function(jit_compile=True)`.
"""

import tensorflow as tf

from keras_yolo.assign import matching


def assign(boxes, valid, anchors, grid_shapes, image_shape, iou_thresh):
    """Responsible (truth, anchor) pairs and the truth's cell on every level.

    Args:
        boxes: `(B, M, 4)` truths in `rel_center_xywh`.
        valid: `(B, M)` bool, False for padded (or skipped) rows.
        anchors: `(L, A, 2)` anchor `(w, h)` in input pixels.
        grid_shapes: `L` pairs `(H_l, W_l)`, the grid size of each level.
        image_shape: `(height, width)` of the input image in pixels.
        iou_thresh: anchors whose shape IoU with the truth exceeds this are
            responsible besides the best one; `>= 1` keeps the best only.

    Returns:
        A dict with
        - `"mask"`: `(B, M, L, A)` bool, truth m is assigned to anchor a of
          level l;
        - `"cells"`: `(B, M, L, 2)` int32 `(row j, column i)` of the truth's
          centre cell on each level, clipped into the grid;
        - `"best"`: `(B, M)` int32 index `l * A + a` of the best anchor.

    Example:
        >>> out = assign(boxes, labels >= 0, YOLOV4_ANCHORS,
        ...              [(76, 76), (38, 38), (19, 19)], (608, 608), 0.213)
    """
    boxes = tf.cast(boxes, tf.float32)
    anchors = tf.cast(tf.convert_to_tensor(anchors), tf.float32)
    num_levels, num_anchors = anchors.shape[0], anchors.shape[1]
    height = tf.cast(image_shape[0], tf.float32)
    width = tf.cast(image_shape[1], tf.float32)
    # Anchors as fractions of the image, like the truths (darknet: biases / net.w).
    flat_anchors = tf.reshape(anchors, (-1, 2)) / tf.stack([width, height])
    shape_iou = matching.shape_iou(boxes[..., None, 2:4], flat_anchors)
    best = matching.best_anchor(boxes[..., 2:4], flat_anchors)  # (B, M)
    is_best = tf.one_hot(best, num_levels * num_anchors, on_value=True,
                         off_value=False)
    mask = is_best
    if iou_thresh < 1.0:
        mask = mask | (shape_iou > iou_thresh)
    mask = mask & valid[..., None]
    mask = tf.reshape(mask, tf.concat([tf.shape(mask)[:2],
                                       [num_levels, num_anchors]], 0))
    cells = []
    for grid_shape in grid_shapes:  # levels: a static, tiny Python loop
        cells.append(tf.stack(matching.centre_cells(boxes[..., :2], grid_shape),
                              axis=-1))
    return {"mask": mask, "cells": tf.stack(cells, axis=2), "best": best}
