"""`YoloV8Loss`: the anchor-free YOLOv8 objective (ultralytics 8 `v8DetectionLoss`)."""

import keras
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.assign.anchor_points import (bbox2dist, dfl_expectation,
                                             dist2bbox, flatten_levels,
                                             make_anchor_points)
from keras_yolo.assign.tal import TaskAlignedAssigner
from keras_yolo.checks import check_positive_int
from keras_yolo.losses.base import TRUTH_FORMAT, YoloLoss

STRIDES = (8, 16, 32)
REG_MAX = 16


def compact_rows(boxes, labels):
    """Real rows (label >= 0) first, in their order; padding after.

    ultralytics' `preprocess` packs each image's truths at the front; the
    assigner's "highest overlap wins" falls back to row 0 on ties, so the
    order of real and padding rows must be the same as there.
    """
    order = tf.argsort(tf.cast(labels < 0, tf.int32), axis=1, stable=True)
    return (tf.gather(boxes, order, batch_dims=1),
            tf.gather(labels, order, batch_dims=1))


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV8Loss(YoloLoss):
    """YOLOv8 objective: ultralytics 8 `v8DetectionLoss` (8.4.190).

    Per image batch, with the task-aligned targets `(s, b̂)` of
    `keras_yolo.assign.tal.TaskAlignedAssigner` (top-k 10, alpha 0.5,
    beta 6), foreground points `fg`, `S = max(sum s, 1)` over the batch and
    `w_n = sum_c s_nc`:

        L_box = box / S * sum_fg w_n (1 - CIoU(b_n, b̂_n))
        L_cls = cls / S * sum_n sum_c BCE(logit_nc, s_nc)
        L_dfl = dfl / S * sum_fg w_n mean_sides DFL(logits_side, d̂_side)

    with the predicted box `b_n = dist2bbox(E[softmax(logits)], point_n)`
    (distances in cells, the DFL expectation over `reg_max` bins) and
    `DFL(x, d) = -((d_r - d) log softmax(x)_{d_l} + (d - d_l) log
    softmax(x)_{d_r})`, `d_l = floor(d)`, `d_r = d_l + 1`, the target
    distances clipped to `[0, reg_max - 1.01]`.

    Raw head output: a list of levels in ascending stride, each
    `(B, H_l, W_l, 4 reg_max + C)`: channel `side * reg_max + bin` for the
    sides (left, top, right, bottom), then the C class logits.

    Reduction: the terms are normalised over the whole batch (by `S`), as
    ultralytics does, so there are no per-image values (`reduction="none"`
    is refused). Default `"sum_over_batch_size"`: `loss(y_true, y_pred) =
    L_box + L_cls + L_dfl`, which does not grow with batch size, like the
    other losses. ultralytics returns `(L_box + L_cls + L_dfl) * B`
    (`loss.sum() * batch_size`): that is `reduction="sum"`.

    Ground truth: `{"boxes": (B, M, 4), "labels": (B, M)}` padded with
    label -1, through the `YoloLoss` policy (invalid rows raise eagerly, are
    masked when compiled). Pixel formats are read against the input size
    `(H_0 s_0, W_0 s_0)`. B, M and the grid may be known only at run time;
    the assignment is dense `(B, M, N)` (N anchor points), so keep M tight.
    A row is a truth when its label is >= 0 (ultralytics tests that its
    corner coordinates sum to more than 0, which every box its loader
    clips to the image passes).

    Args:
        num_classes: C.
        reg_max: DFL bins per side (16).
        strides: stride of each level, ascending.
        bounding_box_format: format of `y_true["boxes"]`.
        box, cls, dfl: gains of the three terms (ultralytics' defaults).
        topk, alpha, beta: task-aligned assignment settings.
        reduction: `"sum_over_batch_size"` (default) or `"sum"` (x B).

    Example:
        >>> loss = YoloV8Loss(num_classes=80)
        >>> total = loss({"boxes": boxes, "labels": labels}, [p3, p4, p5])
        >>> loss.components({"boxes": boxes, "labels": labels},
        ...                 [p3, p4, p5])     # {"box", "cls", "dfl"}
    """

    per_image = False
    term_names = ("box", "cls", "dfl")

    def __init__(self, num_classes, reg_max=REG_MAX, strides=STRIDES,
                 bounding_box_format="rel_center_xywh", box=7.5, cls=0.5,
                 dfl=1.5, topk=10, alpha=0.5, beta=6.0,
                 reduction="sum_over_batch_size", name="yolo_v8_loss",
                 dtype=None):
        super().__init__(num_classes, bounding_box_format,
                         reduction=reduction, name=name, dtype=dtype)
        check_positive_int("topk", topk)
        check_positive_int("reg_max", reg_max)
        if reg_max < 2:
            raise ValueError(
                f"`reg_max` must be >= 2 (DFL bins); got {reg_max}.")
        self.reg_max = int(reg_max)
        self.strides = tuple(int(s) for s in strides)
        self.box, self.cls, self.dfl = float(box), float(cls), float(dfl)
        self.topk, self.alpha, self.beta = int(topk), float(alpha), float(beta)
        # ultralytics widens tiny truths to the second stride (the only one
        # with one level).
        self.assigner = TaskAlignedAssigner(
            self.num_classes, topk=self.topk, alpha=self.alpha,
            beta=self.beta,
            min_size=self.strides[1 if len(self.strides) > 1 else 0])

    def check_levels(self, y_pred):
        levels = super().check_levels(y_pred)
        channels = 4 * self.reg_max + self.num_classes
        for i, p in enumerate(levels):
            if p.shape.rank != 4 or p.shape[-1] != channels:
                raise ValueError(
                    f"y_pred[{i}] has shape {tuple(p.shape)}; expected "
                    f"(B, H, W, 4 * reg_max + num_classes = {channels}).")
        return levels

    def terms(self, truth, levels):
        """`{"box", "cls", "dfl"}`: v8DetectionLoss's three terms, gains
        applied, scalars normalised over the batch."""
        preds, level_hw = flatten_levels(levels)
        points, stride = make_anchor_points(level_hw, self.strides)
        image_shape = self.input_image_shape(levels)
        truth_xyxy = box_ops.convert(truth.boxes, TRUTH_FORMAT, "xyxy",
                                     image_shape)
        truth_xyxy, labels = compact_rows(truth_xyxy, truth.labels)

        split = 4 * self.reg_max
        pred_dist, logits = preds[..., :split], preds[..., split:]
        pred_boxes = dist2bbox(dfl_expectation(pred_dist, self.reg_max),
                               points)  # xyxy, cells
        t = self.assigner(tf.sigmoid(logits), pred_boxes * stride,
                          points * stride, labels, truth_xyxy, labels >= 0)
        scores = t["target_scores"]
        score_sum = tf.maximum(tf.reduce_sum(scores), 1.0)

        cls_loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=scores, logits=logits)) / score_sum

        fg = t["fg_mask"]
        weight = tf.where(fg, tf.reduce_sum(scores, -1), 0.0)  # (B, N)
        target = t["target_boxes"] / stride
        overlap = box_ops.iou(pred_boxes, target, "xyxy", "ciou",
                              convention="ultralytics8")
        box_loss = tf.reduce_sum(tf.where(fg, (1.0 - overlap) * weight,
                                          0.0)) / score_sum

        distance = bbox2dist(points, target, self.reg_max - 1)
        dfl_loss = tf.reduce_sum(
            self._dfl(pred_dist, distance) * weight) / score_sum
        return {"box": box_loss * self.box, "cls": cls_loss * self.cls,
                "dfl": dfl_loss * self.dfl}

    def _dfl(self, pred_dist, distance):
        """Distribution focal loss `(B, N)`, mean over the four sides."""
        shape = tf.concat([tf.shape(pred_dist)[:-1], [4, self.reg_max]], 0)
        log_probs = tf.nn.log_softmax(tf.reshape(pred_dist, shape), -1)
        left = tf.floor(distance)
        right = left + 1.0
        w_left = right - distance
        w_right = 1.0 - w_left
        lp_left = tf.gather(log_probs, tf.cast(left, tf.int32)[..., None],
                            batch_dims=3)[..., 0]
        lp_right = tf.gather(log_probs, tf.cast(right, tf.int32)[..., None],
                             batch_dims=3)[..., 0]
        return tf.reduce_mean(-(lp_left * w_left + lp_right * w_right), -1)

    def get_config(self):
        config = super().get_config()
        config.update(
            reg_max=self.reg_max, strides=self.strides, box=self.box,
            cls=self.cls, dfl=self.dfl, topk=self.topk, alpha=self.alpha,
            beta=self.beta)
        return config
