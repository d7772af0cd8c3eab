"""Task-aligned assignment (TOOD), as ultralytics 8's `TaskAlignedAssigner`.

For a truth `g` and an anchor point `n` with predicted class probabilities
`p_n` and predicted box `b_n` (both without gradient):

    t(g, n) = p_n[label_g]^alpha * max(CIoU(g, b_n), 0)^beta

(CIoU: `keras_yolo.boxes.iou(..., convention="ultralytics8")`, ultralytics
8's `bbox_iou(xywh=False, CIoU=True)`.)

1. candidates: points strictly inside `g` (sides shorter than
   `min_size`, ultralytics' `stride[1]`, are first widened to it about the
   centre);
2. each truth keeps its `topk` candidates of largest `t` (only those of
   positive `t`, see "Ties" below);
3. a point kept by several truths goes to the truth of highest CIoU with its
   prediction (over every truth that has it as a candidate);
4. targets: the truth's box and one-hot class, the class scaled by
   `t(g, n) / max_n t(g, n) * max_n CIoU(g, n)` over `g`'s positives.

Ties: when a truth has fewer than `topk` candidates of positive `t`,
ultralytics' `torch.topk` also keeps some of zero `t`, in an order torch
leaves unspecified; they become positives with a zero target and zero box
weight, so they change no loss term, except that such a point, shared with
a second truth, is handed to the truth of highest overlap. Here they are
not kept; the targets and the loss are ultralytics' otherwise.

Everything is dense `(B, M, N)` (M truth rows, N points) with static
shapes, so it compiles with XLA; padding rows (mask False) take no part.
Rows must be compacted (real rows first): like ultralytics, a point whose
truths all overlap it by 0 goes to row 0.

Example:
    >>> assigner = TaskAlignedAssigner(num_classes=80)
    >>> t = assigner(pred_probs, pred_xyxy_px, points_px, labels,
    ...              truth_xyxy_px, mask)
    >>> t["fg_mask"].shape, t["target_scores"].shape    # (B, N), (B, N, 80)
"""

import tensorflow as tf

from keras_yolo import boxes as box_ops

# ultralytics' TaskAlignedAssigner `eps`: guards the score normalisation and
# makes the "strictly inside" test strict.
EPSILON = 1e-9


def first_index(mask, axis):
    """int32 index of the first True along `axis` (0 where none)."""
    size = tf.shape(mask)[axis]
    shape = [1] * len(mask.shape)
    shape[axis] = -1
    index = tf.reshape(tf.range(size), shape)
    first = tf.reduce_min(tf.where(mask, index, size), axis=axis)
    return tf.where(first == size, 0, first)


class TaskAlignedAssigner:
    """ultralytics 8 `TaskAlignedAssigner` (`utils/tal.py`), dense and static.

    Args:
        num_classes: C.
        topk: candidates kept per truth (ultralytics' v8DetectionLoss: 10).
        alpha: exponent of the class probability in the alignment metric.
        beta: exponent of the CIoU in the alignment metric.
        min_size: truth sides shorter than this (pixels) are widened to it
            for the candidate test (ultralytics: the second stride, 16).
        eps: ultralytics' assigner epsilon.

    Call arguments (pixels, corner `xyxy` boxes):
        pred_scores: `(B, N, C)` class probabilities.
        pred_boxes: `(B, N, 4)`.
        points: `(N, 2)` anchor points.
        labels: `(B, M)` int, any value on padding rows.
        truth_boxes: `(B, M, 4)`.
        mask: `(B, M)` bool, True for real rows (real rows first).

    Returns:
        dict: `target_labels (B, N)` int32, `target_boxes (B, N, 4)`,
        `target_scores (B, N, C)`, `fg_mask (B, N)` bool,
        `target_index (B, N)` int32 (the truth row of each point).
    """

    def __init__(self, num_classes, topk=10, alpha=0.5, beta=6.0,
                 min_size=16.0, eps=EPSILON):
        self.num_classes = int(num_classes)
        self.topk = int(topk)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.min_size = float(min_size)
        self.eps = float(eps)

    def get_config(self):
        return dict(num_classes=self.num_classes, topk=self.topk,
                    alpha=self.alpha, beta=self.beta, min_size=self.min_size,
                    eps=self.eps)

    # Hooks (ultralytics' rotated variant overrides exactly these two).
    def overlaps(self, truth_boxes, pred_boxes):
        """`(B, M, 1, 4)` x `(B, 1, N, 4)` -> `(B, M, N)` CIoU, at least 0."""
        return tf.maximum(box_ops.iou(truth_boxes, pred_boxes, "xyxy", "ciou",
                                      convention="ultralytics8"), 0.0)

    def candidates(self, points, truth_boxes, mask):
        """`(B, M, N)` bool: point strictly inside its truth (widened)."""
        xy = (truth_boxes[..., :2] + truth_boxes[..., 2:]) / 2
        wh = truth_boxes[..., 2:] - truth_boxes[..., :2]
        wh = tf.where((wh < self.min_size) & mask[..., None],
                      tf.cast(self.min_size, wh.dtype), wh)
        lt = (xy - wh / 2)[:, :, None, :]
        rb = (xy + wh / 2)[:, :, None, :]
        p = points[None, None]
        inside = tf.concat([p - lt, rb - p], -1) > self.eps
        return tf.reduce_all(inside, -1)

    def __call__(self, pred_scores, pred_boxes, points, labels, truth_boxes,
                 mask):
        pred_scores = tf.stop_gradient(pred_scores)
        pred_boxes = tf.stop_gradient(pred_boxes)
        labels = tf.cast(labels, tf.int32)
        mask = tf.cast(mask, tf.bool)
        num_truths = truth_boxes.shape[1]
        num_points = tf.shape(pred_scores)[1]
        if num_truths == 0:
            batch = tf.shape(pred_scores)[0]
            return dict(
                target_labels=tf.fill([batch, num_points], self.num_classes),
                target_boxes=tf.zeros_like(pred_boxes),
                target_scores=tf.zeros_like(pred_scores),
                fg_mask=tf.zeros([batch, num_points], tf.bool),
                target_index=tf.zeros([batch, num_points], tf.int32))

        # 1. candidates and the alignment metric, (B, M, N).
        inside = self.candidates(points, truth_boxes, mask)
        in_mask = inside & mask[..., None]
        safe_labels = tf.maximum(labels, 0)
        scores = tf.gather(tf.transpose(pred_scores, [0, 2, 1]), safe_labels,
                           batch_dims=1)  # (B, M, N)
        overlaps = self.overlaps(truth_boxes[:, :, None, :],
                                 pred_boxes[:, None, :, :])
        overlaps = tf.where(in_mask, overlaps, 0.0)
        align = tf.where(in_mask, tf.pow(scores, self.alpha)
                         * tf.pow(overlaps, self.beta), 0.0)

        # 2. each real truth keeps its top-k points (inside it).
        k = self.topk
        if isinstance(pred_scores.shape[1], int):
            k = min(k, pred_scores.shape[1])
        _, top = tf.math.top_k(align, k=k)  # (B, M, k)
        b_idx = tf.broadcast_to(tf.range(tf.shape(top)[0])[:, None, None],
                                tf.shape(top))
        m_idx = tf.broadcast_to(tf.range(tf.shape(top)[1])[None, :, None],
                                tf.shape(top))
        picked = tf.scatter_nd(tf.stack([b_idx, m_idx, top], -1),
                               tf.ones_like(top, tf.int32),
                               tf.shape(align)) > 0
        # Only points of positive alignment: see "Ties" in the class doc.
        mask_pos = picked & in_mask & (align > 0)

        # 3. a point picked by several truths: highest overlap wins.
        multi = tf.reduce_sum(tf.cast(mask_pos, tf.int32), 1) > 1  # (B, N)
        best = first_index(overlaps == tf.reduce_max(overlaps, 1,
                                                     keepdims=True), 1)
        rows = tf.range(tf.shape(mask_pos)[1])[None, :, None]
        is_best = rows == best[:, None, :]
        mask_pos = tf.where(multi[:, None, :], is_best, mask_pos)
        fg_mask = tf.reduce_any(mask_pos, 1)
        target_index = first_index(mask_pos, 1)  # (B, N)

        # 4. targets.
        target_labels = tf.gather(safe_labels, target_index, batch_dims=1)
        target_boxes = tf.gather(truth_boxes, target_index, batch_dims=1)
        one_hot = tf.one_hot(target_labels, self.num_classes,
                             dtype=pred_scores.dtype)
        target_scores = one_hot * tf.cast(fg_mask, one_hot.dtype)[..., None]
        align = tf.where(mask_pos, align, 0.0)
        overlaps = tf.where(mask_pos, overlaps, 0.0)
        pos_align = tf.reduce_max(align, -1, keepdims=True)  # (B, M, 1)
        pos_overlaps = tf.reduce_max(overlaps, -1, keepdims=True)
        norm = align * pos_overlaps / (pos_align + self.eps)
        norm = tf.reduce_max(norm, 1)  # (B, N)
        target_scores = target_scores * norm[..., None]
        return dict(target_labels=target_labels, target_boxes=target_boxes,
                    target_scores=target_scores, fg_mask=fg_mask,
                    target_index=target_index)
