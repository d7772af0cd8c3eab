"""Anchor-free (YOLOv8) geometry: anchor points, distances and boxes, DFL.

One set of helpers for the v8 head decoding and the v8 loss, as ultralytics'
`utils/tal.py: make_anchors, dist2bbox, bbox2dist`, so decoding at inference
and in the loss cannot drift apart.

An anchor point is the centre of a grid cell, `(col + 0.5, row + 0.5)` in
cells of its level; points are ordered level by level (ascending stride),
row-major inside a level, as a `(B, H, W, ...)` level reshaped to
`(B, H W, ...)`. A box is predicted as its distances `(l, t, r, b)` from the
point to its four sides, in cells.

Example:
    >>> points, stride = make_anchor_points([(2, 2), (1, 1)], (8, 16))
    >>> points            # [[.5, .5], [1.5, .5], [.5, 1.5], [1.5, 1.5], [.5, .5]]
    >>> stride[:, 0]      # [8, 8, 8, 8, 16]
"""

import tensorflow as tf

# ultralytics' `grid_cell_offset`: anchor points sit at cell centres.
CELL_OFFSET = 0.5
# bbox2dist keeps a target distance strictly below the last DFL bin, so its
# right neighbour bin exists (ultralytics' `reg_max - 0.01`).
DFL_MARGIN = 0.01


def flatten_levels(levels):
    """Levels `(B, H_l, W_l, ch)` -> `((B, N, ch), [(H_l, W_l)])`.

    Sizes are Python ints where the shapes are static (so N stays static
    in traced graphs and exports), scalar tensors otherwise.
    """
    flat, level_hw = [], []
    for p in levels:
        dynamic = tf.shape(p)
        height = p.shape[1] if p.shape[1] is not None else dynamic[1]
        width = p.shape[2] if p.shape[2] is not None else dynamic[2]
        level_hw.append((height, width))
        flat.append(tf.reshape(p, [dynamic[0], height * width, p.shape[-1]]))
    return tf.concat(flat, 1), level_hw


def make_anchor_points(level_hw, strides, offset=CELL_OFFSET,
                       dtype=tf.float32):
    """Anchor points of every level, in cells, and the stride of each.

    Args:
        level_hw: `(height, width)` of each level, ints or scalar tensors
            (run-time sizes are fine).
        strides: the stride of each level in input pixels.
        offset: position of the point inside its cell (0.5: the centre).
        dtype: float dtype of the results.

    Returns:
        `(points, stride)`: `(N, 2)` `(x, y)` in cells of each point's level
        and `(N, 1)` strides, `N = sum_l H_l W_l`.
    """
    points, point_strides = [], []
    for (height, width), stride in zip(level_hw, strides):
        xs = tf.range(width, dtype=dtype) + offset
        ys = tf.range(height, dtype=dtype) + offset
        grid_x, grid_y = tf.meshgrid(xs, ys)  # (H, W), row-major
        points.append(tf.reshape(tf.stack([grid_x, grid_y], -1), [-1, 2]))
        point_strides.append(tf.fill([tf.size(grid_x), 1],
                                     tf.cast(stride, dtype)))
    return tf.concat(points, 0), tf.concat(point_strides, 0)


def dist2bbox(distance, points, center=False):
    """`(l, t, r, b)` distances from points to boxes.

    Args:
        distance: `(..., 4)` distances to the left, top, right, bottom sides.
        points: `(..., 2)` `(x, y)`, broadcastable against `distance`.
        center: `False` for corners `xyxy`, `True` for `center_xywh`.

    Returns:
        `(..., 4)` boxes in the units of the inputs.
    """
    lt, rb = distance[..., :2], distance[..., 2:]
    x1y1 = points - lt
    x2y2 = points + rb
    if center:
        return tf.concat([(x1y1 + x2y2) / 2, x2y2 - x1y1], -1)
    return tf.concat([x1y1, x2y2], -1)


def bbox2dist(points, boxes, max_distance=None):
    """Corner boxes `(..., 4)` `xyxy` to `(l, t, r, b)` distances from points.

    With `max_distance` (ultralytics passes `reg_max - 1`) the distances are
    clipped to `[0, max_distance - 0.01]`, the range the DFL bins can hold.
    """
    dist = tf.concat([points - boxes[..., :2], boxes[..., 2:] - points], -1)
    if max_distance is not None:
        dist = tf.clip_by_value(dist, 0.0, max_distance - DFL_MARGIN)
    return dist


def dfl_expectation(logits, reg_max):
    """Expected distance of each side under the softmax over its DFL bins.

    Args:
        logits: `(..., 4 * reg_max)`, side-major (`side * reg_max + bin`).
        reg_max: number of bins; bin `i` stands for distance `i` cells.

    Returns:
        `(..., 4)` distances `sum_i i softmax(logits_side)_i`.
    """
    shape = tf.concat([tf.shape(logits)[:-1], [4, reg_max]], 0)
    probs = tf.nn.softmax(tf.reshape(logits, shape), axis=-1)
    bins = tf.range(reg_max, dtype=probs.dtype)
    return tf.reduce_sum(probs * bins, axis=-1)
