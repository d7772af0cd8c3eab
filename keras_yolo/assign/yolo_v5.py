"""YOLOv5 target assignment (ultralytics `ComputeLoss.build_targets`), vectorized.

Per level with a `H x W` grid and anchors `a_k` (in grid cells), a truth
with centre `g = (x W, y H)` and size `g_wh = (w W, h H)` is matched to every
anchor k with

    max(r, 1/r) < anchor_t   for both coordinates of r = g_wh / a_k,

and, for each matched anchor, to up to three cells: its own cell and the two
neighbours nearest to the centre, by the 0.5 offset rule (offsets `o`):

    o = (0, 0)                          always
    o = (+0.5, 0)   if g_x mod 1 < 0.5 and g_x > 1       (left neighbour)
    o = (0, +0.5)   if g_y mod 1 < 0.5 and g_y > 1       (upper neighbour)
    o = (-0.5, 0)   if (W - g_x) mod 1 < 0.5 and W - g_x > 1   (right)
    o = (0, -0.5)   if (H - g_y) mod 1 < 0.5 and H - g_y > 1   (lower)
    cell = clamp(trunc(g - o)) to the grid,  t_box = (g - cell, g_wh)

Instead of ultralytics' variable-length lists, every (image, truth, anchor,
offset) combination is a slot of a fixed `(B, M, A, 5)` tensor with a
`valid` mask, so the whole assignment is static-shape and XLA-compilable.
"""

import tensorflow as tf

# ultralytics' `g`: a centre in the near half of its cell also trains the
# neighbouring cell on that side.
NEIGHBOUR_BIAS = 0.5
# Offsets in ultralytics' order: centre, left, up, right, down (x, y).
OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))


def build_targets(boxes, labels, grid_shape, anchors, anchor_t=4.0):
    """Assigns rel_center_xywh truths to cells and anchors of one level.

    Args:
        boxes: `(B, M, 4)` float32 `rel_center_xywh` truths.
        labels: `(B, M)` int32, -1 for padded rows.
        grid_shape: `(H, W)` of the level (Python ints).
        anchors: `(A, 2)` anchor `(w, h)` in grid cells of this level.
        anchor_t: the `max(r, 1/r)` matching threshold.

    Returns:
        dict of
        `valid` `(B, M, A, 5)` bool: the slot is a positive sample;
        `indices` `(B, M, A, 5, 3)` int32 `(row, column, anchor)` of the
            predicted cell (clamped to the grid);
        `box` `(B, M, A, 5, 4)` float32 target `(x, y, w, h)` in cells,
            `x, y` relative to the (clamped) cell corner;
        `anchor_wh` `(1, 1, A, 1, 2)` the anchors, broadcastable;
        `order` `(B, M, A, 5)` int32 the slot's position in ultralytics'
            write order (offset, anchor, truth): when several slots land on
            the same (image, anchor, cell), ultralytics' `tobj[...] = iou`
            keeps the last one.

    Example:
        >>> t = build_targets(boxes, labels, (80, 80), anchors / 8.0)
        >>> t["valid"].shape   # (B, M, 3, 5)
    """
    height, width = int(grid_shape[0]), int(grid_shape[1])
    anchors = tf.cast(tf.convert_to_tensor(anchors), tf.float32)
    num_anchors = anchors.shape[0]
    num_boxes = boxes.shape[1]
    gain = tf.constant([width, height], tf.float32)
    gxy = boxes[..., 0:2] * gain  # (B, M, 2), as ultralytics: targets * gain
    gwh = boxes[..., 2:4] * gain
    real = labels >= 0

    # Anchor match: (B, M, A).
    ratio = gwh[:, :, None, :] / anchors[None, None, :, :]
    worst = tf.reduce_max(tf.maximum(ratio, 1.0 / ratio), axis=-1)
    matched = real[:, :, None] & (worst < anchor_t)

    # Offset choice: (B, M, 5).
    gxi = gain - gxy
    near_low = (tf.math.floormod(gxy, 1.0) < NEIGHBOUR_BIAS) & (gxy > 1.0)
    near_high = (tf.math.floormod(gxi, 1.0) < NEIGHBOUR_BIAS) & (gxi > 1.0)
    use = tf.stack([tf.ones_like(near_low[..., 0]), near_low[..., 0],
                    near_low[..., 1], near_high[..., 0], near_high[..., 1]],
                   axis=-1)
    valid = matched[..., None] & use[:, :, None, :]  # (B, M, A, 5)

    offsets = tf.constant(OFFSETS, tf.float32) * NEIGHBOUR_BIAS  # (5, 2)
    # `.long()` truncates toward zero, as tf.cast does.
    gij = tf.cast(gxy[:, :, None, :] - offsets[None, None], tf.int32)
    gi = tf.clip_by_value(gij[..., 0], 0, width - 1)
    gj = tf.clip_by_value(gij[..., 1], 0, height - 1)
    # ultralytics clamps gij in place (`gi.clamp_`) before `gxy - gij`, so
    # the target offset is taken from the clamped cell.
    box_xy = gxy[:, :, None, :] - tf.cast(tf.stack([gi, gj], -1), tf.float32)

    a_index = tf.range(num_anchors, dtype=tf.int32)[None, None, :, None]
    indices = tf.stack([
        tf.broadcast_to(gj[:, :, None, :], tf.shape(valid)),
        tf.broadcast_to(gi[:, :, None, :], tf.shape(valid)),
        tf.broadcast_to(a_index, tf.shape(valid)),
    ], axis=-1)
    box = tf.concat([
        tf.broadcast_to(box_xy[:, :, None, :, :],
                        tf.concat([tf.shape(valid), [2]], 0)),
        tf.broadcast_to(gwh[:, :, None, None, :],
                        tf.concat([tf.shape(valid), [2]], 0)),
    ], axis=-1)
    o_index = tf.range(len(OFFSETS), dtype=tf.int32)[None, None, None, :]
    m_index = tf.range(num_boxes, dtype=tf.int32)[None, :, None, None]
    order = (o_index * num_anchors + a_index) * num_boxes + m_index
    order = tf.broadcast_to(order, tf.shape(valid))
    return {
        "valid": valid,
        "indices": indices,
        "box": box,
        "anchor_wh": anchors[None, None, :, None, :],
        "order": order,
    }
