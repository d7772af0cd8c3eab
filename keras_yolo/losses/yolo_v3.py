"""`YoloV3Loss`: the YOLOv3 objective, per the seed and per darknet's [yolo]."""

import keras
import numpy as np
import tensorflow as tf

from keras_yolo import anchors as default_anchors
from keras_yolo import boxes as box_ops
from keras_yolo import grid
from keras_yolo.assign import matching
from keras_yolo.assign import yolo_v3 as assign
from keras_yolo.checks import check_non_negative, check_unit_interval
from keras_yolo.losses.base import YoloLoss, dim

# The seed regresses the raw t_x = logit(x - c_x); a centre on a cell edge
# would need an infinite target, so the offset is kept in [eps, 1 - eps]
# (|t_x| <= 6.9).
OFFSET_EPSILON = 1e-3
# Smallest truth size (fraction of the image) in t_w = log(w / p_w): keeps a
# zero-size box's target finite instead of -inf.
MIN_BOX_SIZE = 1e-6
COORD_GATES = ("anchor", "prediction", None)


def _bce(targets, logits):
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets,
                                                   logits=logits)


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV3Loss(YoloLoss):
    """YOLOv3 objective (Redmon & Farhadi 2018), seed formula or darknet's.

    Seed (default), summed over levels, cells i and anchors j:

        L = λ_coord Σ 1obj_ij 1^{IOU>0.5}_ij (2 − w_ij h_ij) Σ_{*∈x,y,w,h} (t_*ij − t̂_*ij)²
          + λ_obj   Σ 1^{not ignored}_ij [−C_ij log Ĉ_ij − (1 − C_ij) log(1 − Ĉ_ij)]
          + λ_class Σ 1obj_ij Σ_c [−p_i(c) log p̂_i(c) − (1 − p_i(c)) log(1 − p̂_i(c))]

    with Ĉ = logistic(t̂_o), p̂(c) = logistic(ĉ_c), targets from inverting
    x = logistic(t_x) + c_x, w = p_w e^{t_w}: t_x = logit(x − c_x) (offset
    clipped to [1e-3, 1 − 1e-3]), t_w = log(w / p_w); w, h in (2 − w h) are
    the truth's size as fractions of the image.

    - `1obj_ij`: the prior (anchor) that overlaps the truth best among all
      anchors of all levels (shape IoU, centres aligned) is responsible, at
      the cell holding the truth's centre. C_ij = 1 there, 0 elsewhere.
    - Ignored: a prediction that is not responsible but whose decoded box
      overlaps some truth by more than `ignore_thresh` gets no objectness
      loss (darknet compares predicted boxes; so does this loss).
    - `1^{IOU>0.5}` on the coordinate term: the seed writes
      IOU^truth_anchor, the overlap of the responsible *prior* with the
      truth, so by default (`coord_iou_gate="anchor"`) a responsible prior
      gets coordinate loss only when its shape IoU with the truth exceeds
      `coord_iou_thresh`. `"prediction"` reads it as darknet's predicted
      box (IoU of the decoded box with the truth, no gradient through it);
      `None` drops the indicator (darknet: every responsible prior
      regresses its truth).
    - Several truths on one cell and anchor: the last one (in row order)
      gives the box; the class target is the union of their classes
      (darknet's behaviour).
    - `truth_thresh` (darknet's, default 1 = off): a prediction whose box
      overlaps a truth by more than it is made responsible for that truth.

    `darknet_compat=True` reproduces pjreddie darknet's [yolo] layer
    (src/yolo_layer.c, 2018): no IoU indicator on coordinates, and darknet's
    x, y delta `(2 − wh)(t_x − logistic(t̂_x))` applied to the raw output as
    it is (its backward does not multiply by the logistic's slope). The loss
    whose negative gradient is darknet's delta is used:

        box = (2 − w h) [BCE(x − c_x, logistic(t̂_x)) + BCE(y − c_y, logistic(t̂_y))
                         + ½ (t_w − t̂_w)² + ½ (t_h − t̂_h)²]

    (BCE against a fractional target: its gradient in t̂_x is
    logistic(t̂_x) − (x − c_x)), objectness and classes as above. Then with
    `reduction="sum"` and λ's at 1, `−dL/d(raw)` equals darknet's `delta`
    level by level; with the default reduction it equals `delta / B`.
    (Tested against Debian's libdarknet within 1e-4.) Where darknet's input
    conventions differ: its truth list ends at the first row with x == 0
    (here only label -1 rows are padding), and a centre at exactly x == 1
    indexes past its grid (here it falls in the last cell).

    Reduction (`YoloLoss`'s, of the per-image sums): `"sum_over_batch_size"`
    (default, also `"mean"`): the seed's per-image sums averaged over the
    batch, so the learning rate does not depend on B (darknet's update also
    divides its summed delta by the batch). `"sum"`: summed over the batch,
    darknet's raw delta. `"none"`: the per-image sums `(B,)`;
    `sample_weight` weights images.

    Args:
        num_classes: C.
        anchors: `(3, 3, 2)` anchors `(w, h)` in input pixels, one row per
            level (default: darknet yolov3.cfg's nine COCO anchors at 416);
            with `masks`, the full list of darknet's `anchors=`.
        strides: pixels per grid cell of each level, ascending.
        masks: darknet's [yolo] `mask=` per level, indices into the full
            anchor list (default: level l owns `anchors[l]`). Assignment
            always picks the best of all anchors; a truth whose best anchor
            is in no level's mask is not learned (as in darknet).
        lambda_coord, lambda_obj, lambda_class: weights of the three terms
            (darknet has none: keep 1 for parity).
        ignore_thresh: darknet's `ignore_thresh`.
        truth_thresh: darknet's `truth_thresh`; 1 (default) disables it
            (darknet's float32 IoU of a prediction identical to a truth can
            round above 1 and fire it; that artifact is not reproduced).
        coord_iou_gate: `"anchor"`, `"prediction"` or `None` (see above);
            ignored (None) when `darknet_compat`.
        coord_iou_thresh: threshold of that indicator (the seed's 0.5).
        bounding_box_format: format of `y_true["boxes"]`; pixel formats are
            pixels of the input image, inferred as grid size times stride.
        darknet_compat: darknet's exact gradients (see above).
        reduction: see above and `YoloLoss`.

    Call:
        y_true: `{"boxes": (B, M, 4), "labels": (B, M) int}`, negative
            labels pad; B and M may be unknown until run time
            (`padded_batch`). Rows that break the ground-truth policy
            (`keras_yolo.assign.groundtruth`: label >= C or not an integer,
            non-finite coordinate, empty or off-image box) raise
            `GroundTruthError` eagerly and are masked (as padding) inside
            `tf.function` / XLA.
        y_pred: list of `(B, H_l, W_l, A, 5 + C)` raw outputs, ascending
            stride (any float dtype; computed in float32). Any finite value
            gives a finite loss and gradient: the decoded sizes (ignore rule,
            `truth_thresh`, the `"prediction"` gate) clip `t_w, t_h` to ±20
            (`MAX_LOG_SCALE`), where darknet's `exp` overflows to inf boxes.
        Returns a scalar; `components(y_true, y_pred)` gives `{"box", "obj",
        "cls"}` summing to it.

    Example:
        >>> loss = YoloV3Loss(num_classes=80)
        >>> y_true = {"boxes": [[[0.5, 0.5, 0.2, 0.3]]], "labels": [[1]]}
        >>> y_pred = [tf.zeros((1, s, s, 3, 85)) for s in (52, 26, 13)]
        >>> loss(y_true, y_pred)     # scalar
    """

    def __init__(self, num_classes, anchors=default_anchors.YOLOV3_ANCHORS,
                 strides=default_anchors.STRIDES, masks=None,
                 lambda_coord=1.0, lambda_obj=1.0, lambda_class=1.0,
                 ignore_thresh=0.5, truth_thresh=1.0, coord_iou_gate="anchor",
                 coord_iou_thresh=0.5, bounding_box_format="rel_center_xywh",
                 darknet_compat=False, reduction="sum_over_batch_size",
                 name="yolo_v3_loss", dtype=None):
        super().__init__(num_classes, bounding_box_format,
                         reduction=reduction, name=name, dtype=dtype)
        if coord_iou_gate not in COORD_GATES:
            raise ValueError(f"`coord_iou_gate` must be one of {COORD_GATES};"
                             f" got {coord_iou_gate!r}.")
        check_non_negative(lambda_coord=lambda_coord, lambda_obj=lambda_obj,
                           lambda_class=lambda_class)
        check_unit_interval(ignore_thresh=ignore_thresh,
                            truth_thresh=truth_thresh,
                            coord_iou_thresh=coord_iou_thresh)
        self.strides = tuple(int(s) for s in strides)
        self.all_anchors, self.masks = grid.level_anchors(anchors, masks,
                                                     len(self.strides))
        self.anchors = np.asarray(anchors, np.float32).tolist()
        self._masks_arg = None if masks is None else self.masks
        self.lambda_coord = float(lambda_coord)
        self.lambda_obj = float(lambda_obj)
        self.lambda_class = float(lambda_class)
        self.ignore_thresh = float(ignore_thresh)
        self.truth_thresh = float(truth_thresh)
        self.coord_iou_gate = coord_iou_gate
        self.coord_iou_thresh = float(coord_iou_thresh)
        self.darknet_compat = bool(darknet_compat)

    def terms(self, truth, levels):
        """Per-image `{"box", "obj", "cls"}`, each `(B,)`, weighted by the
        λ's."""
        boxes, labels = truth.boxes, truth.labels
        image_hw = tf.cast(tf.stack(self.input_image_shape(levels)),
                           tf.float32)
        truth_wh_px = boxes[..., 2:4] * image_hw[::-1]
        best = matching.best_anchor(truth_wh_px, tf.constant(self.all_anchors))
        totals = {"box": 0.0, "obj": 0.0, "cls": 0.0}  # each (B,)
        for level, raw in enumerate(levels):
            terms = self._level(raw, level, boxes, labels, best)
            for key in totals:
                totals[key] = totals[key] + terms[key]
        scale = {"box": self.lambda_coord, "obj": self.lambda_obj,
                 "cls": self.lambda_class}
        return {k: scale[k] * v for k, v in totals.items()}

    def level_anchor_counts(self):
        return [len(mask) for mask in self.masks]

    def _level(self, raw, level, boxes, labels, best):
        mask = self.masks[level]
        anchors = self.all_anchors[mask]
        stride = self.strides[level]
        height, width = dim(raw, 1), dim(raw, 2)
        batch = dim(raw, 0)
        grid_shape = (height, width, len(mask))
        targets = assign.assign_level(boxes, labels, best, mask,
                                      (height, width), self.num_classes)

        # Predicted boxes, for the ignore mask and truth_thresh (no gradient).
        pred = tf.stop_gradient(grid.decode_boxes(raw, anchors, stride))
        flat_pred = tf.reshape(pred, [batch, -1, 4])
        best_iou, best_t = matching.best_truth_iou(flat_pred, boxes,
                                                  labels >= 0)
        best_iou = tf.reshape(best_iou, [batch, *grid_shape])
        best_t = tf.reshape(best_t, [batch, -1])
        assigned = targets["responsible"] > 0
        if self.truth_thresh < 1.0:
            matched = best_iou > self.truth_thresh
        else:  # off (darknet's float IoU may round above 1: not reproduced)
            matched = tf.zeros_like(best_iou, tf.bool)
        positive = assigned | matched
        matched_box = tf.reshape(tf.gather(boxes, best_t, batch_dims=1),
                                 [batch, *grid_shape, 4])
        matched_cls = tf.reshape(
            tf.one_hot(tf.gather(labels, best_t, batch_dims=1),
                       self.num_classes), [batch, *grid_shape,
                                           self.num_classes])
        truth = tf.where(assigned[..., None], targets["boxes"], matched_box)
        classes = tf.minimum(
            targets["classes"]
            + tf.cast(matched, tf.float32)[..., None] * matched_cls, 1.0)

        # Coordinate targets t = inverse of the decoding, in the slot's cell.
        size = tf.cast(tf.stack([width, height]), tf.float32)
        cells = tf.stack(tf.meshgrid(tf.range(width), tf.range(height)), -1)
        cells = tf.cast(cells, tf.float32)[None, :, :, None, :]
        offset = truth[..., 0:2] * size - cells
        t_wh = tf.math.log(tf.maximum(truth[..., 2:4], MIN_BOX_SIZE)
                           * size * stride / tf.constant(anchors))
        weight = 2.0 - truth[..., 2] * truth[..., 3]
        pos = tf.cast(positive, tf.float32)

        if self.darknet_compat:
            per_slot = (tf.reduce_sum(_bce(offset, raw[..., 0:2]), -1)
                        + 0.5 * tf.reduce_sum(
                            tf.square(t_wh - raw[..., 2:4]), -1))
            gate = 1.0
        else:
            clipped = tf.clip_by_value(offset, OFFSET_EPSILON,
                                       1.0 - OFFSET_EPSILON)
            t_xy = tf.math.log(clipped) - tf.math.log1p(-clipped)  # logit
            per_slot = tf.reduce_sum(
                tf.square(tf.concat([t_xy, t_wh], -1) - raw[..., 0:4]), -1)
            gate = self._gate(truth, pred, anchors, size * stride)
        # `where`, not a product: a masked slot's square of a huge raw
        # output (inf) must not turn into 0 * inf = NaN.
        box = tf.reduce_sum(tf.where(positive, gate * weight * per_slot, 0.0),
                            [1, 2, 3])

        ignored = assign.ignore_mask(best_iou, self.ignore_thresh)
        obj_weight = pos + (1.0 - pos) * (1.0 - ignored)
        obj = tf.reduce_sum(obj_weight * _bce(pos, raw[..., 4]), [1, 2, 3])
        cls = tf.reduce_sum(tf.where(positive[..., None],
                                     _bce(classes, raw[..., 5:]), 0.0),
                            [1, 2, 3, 4])
        return {"box": box, "obj": obj, "cls": cls}

    def _gate(self, truth, pred, anchors, image_wh):
        """The seed's 1^{IOU > 0.5} on the coordinate term (see class doc)."""
        if self.coord_iou_gate is None:
            return 1.0
        if self.coord_iou_gate == "anchor":
            iou = matching.shape_iou(truth[..., 2:4] * image_wh,
                                     tf.constant(anchors))
        else:  # darknet's box_iou of each prediction and its truth
            iou = box_ops.iou(pred, truth, "rel_center_xywh", "iou",
                              convention="darknet")
        return tf.cast(iou > self.coord_iou_thresh, tf.float32)

    def get_config(self):
        config = super().get_config()
        config.update(
            anchors=self.anchors,
            strides=list(self.strides), masks=self._masks_arg,
            lambda_coord=self.lambda_coord, lambda_obj=self.lambda_obj,
            lambda_class=self.lambda_class, ignore_thresh=self.ignore_thresh,
            truth_thresh=self.truth_thresh,
            coord_iou_gate=self.coord_iou_gate,
            coord_iou_thresh=self.coord_iou_thresh,
            darknet_compat=self.darknet_compat)
        return config
