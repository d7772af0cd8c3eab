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

Every (image, truth, anchor, offset) combination is a slot of a
`(B, M, A, 5)` grid with a `valid` mask; this costs a few operations per
padded slot. The slots are then flattened and, with `compact=True`, only the
valid ones are kept (a run-time length, linear in the real truths), which is
what makes everything downstream independent of the padding. XLA needs
static shapes, so there `compact=False` keeps all slots and the mask.
"""

import tensorflow as tf

# ultralytics' `g`: a centre in the near half of its cell also trains the
# neighbouring cell on that side.
NEIGHBOUR_BIAS = 0.5
# Offsets in ultralytics' order: centre, left, up, right, down (x, y).
OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))


def build_targets(boxes, labels, grid_shape, anchors, anchor_t=4.0,
                  compact=True):
    """Assigns rel_center_xywh truths to cells and anchors of one level.

    Works when the batch size, the box count `M` and the grid are known only
    at run time.

    Args:
        boxes: `(B, M, 4)` float32 `rel_center_xywh` truths.
        labels: `(B, M)` int32, negative for padded rows.
        grid_shape: `(H, W)` of the level (Python ints or int32 scalars).
        anchors: `(A, 2)` anchor `(w, h)` in grid cells of this level.
        anchor_t: the `max(r, 1/r)` matching threshold.
        compact: keep only the positive slots (`S` = their number, known at
            run time); `False` keeps all `S = B M A 5` slots, for XLA.

    Returns:
        dict of `(S, ...)` tensors, one row per slot:
        `valid` `(S,)` bool: the slot is a positive sample (all True when
            `compact`);
        `cell` `(S,)` int32 the predicted cell's row in the level's
            predictions reshaped to `(B H W A, 5 + C)`: `((b H + row) W +
            column) A + anchor` (cell clamped to the grid);
        `box` `(S, 4)` float32 target `(x, y, w, h)` in cells, `x, y`
            relative to the (clamped) cell corner;
        `anchor_wh` `(S, 2)` the slot's anchor;
        `label` `(S,)` int32 the truth's class;
        `order` `(S,)` int32 the slot's position in ultralytics' write
            order (offset, anchor, truth): when several slots land on one
            (image, anchor, cell), ultralytics' `tobj[...] = iou` keeps the
            last one.

    Example:
        >>> t = build_targets(boxes, labels, (80, 80), anchors / 8.0)
        >>> t["cell"].shape   # (S,): about 3 x 3 slots per real truth
    """
    height, width = grid_shape
    anchors = tf.cast(tf.convert_to_tensor(anchors), tf.float32)
    num_anchors = anchors.shape[0]
    num_offsets = len(OFFSETS)
    labels = tf.cast(labels, tf.int32)
    batch, num_boxes = tf.shape(labels)[0], tf.shape(labels)[1]
    gain = tf.cast(tf.stack([width, height]), tf.float32)
    gxy = boxes[..., 0:2] * gain  # (B, M, 2), as ultralytics: targets * gain
    gwh = boxes[..., 2:4] * gain
    real = labels >= 0

    # Anchor match: (B, M, A). A zero size (padding) gives r = 0, no match.
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
    gi = tf.clip_by_value(gij[..., 0], 0, tf.cast(width, tf.int32) - 1)
    gj = tf.clip_by_value(gij[..., 1], 0, tf.cast(height, tf.int32) - 1)
    # ultralytics clamps gij in place (`gi.clamp_`) before `gxy - gij`, so
    # the target offset is taken from the clamped cell.
    box_xy = gxy[:, :, None, :] - tf.cast(tf.stack([gi, gj], -1), tf.float32)

    b_index = tf.range(batch)[:, None, None, None]
    a_index = tf.range(num_anchors, dtype=tf.int32)[None, None, :, None]
    o_index = tf.range(num_offsets, dtype=tf.int32)[None, None, None, :]
    m_index = tf.range(num_boxes)[None, :, None, None]
    cell = (((b_index * tf.cast(height, tf.int32) + gj[:, :, None, :])
             * tf.cast(width, tf.int32) + gi[:, :, None, :]) * num_anchors
            + a_index)  # (B, M, A, 5)
    order = (o_index * num_anchors + a_index) * num_boxes + m_index
    slot_shape = tf.shape(valid)

    def flat(x):
        return tf.reshape(tf.broadcast_to(x, slot_shape), [-1])

    flat_valid = tf.reshape(valid, [-1])
    slots = {
        "valid": flat_valid,
        "cell": flat(cell),
        "order": flat(order),
    }
    # Per-truth and per-(truth, offset) values are gathered through the
    # slot's truth, not broadcast to every slot.
    truth = flat(b_index * num_boxes + m_index)
    truth_offset = truth * num_offsets + flat(o_index)
    anchor = flat(a_index)
    if compact:
        keep = tf.reshape(tf.where(flat_valid), [-1])
        slots = {key: tf.gather(value, keep) for key, value in slots.items()}
        truth = tf.gather(truth, keep)
        truth_offset = tf.gather(truth_offset, keep)
        anchor = tf.gather(anchor, keep)
    slots["box"] = tf.concat([
        tf.gather(tf.reshape(box_xy, [-1, 2]), truth_offset),
        tf.gather(tf.reshape(gwh, [-1, 2]), truth),
    ], axis=-1)
    slots["anchor_wh"] = tf.gather(anchors, anchor)
    slots["label"] = tf.gather(tf.reshape(labels, [-1]), truth)
    return slots
