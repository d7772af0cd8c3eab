"""YOLOv4 objective: CIoU box loss, grid-sensitivity scale, several anchors per truth.

Seed (YOLOv4 section of the seeds' loss sheet):

    x = scale(logistic(t_x)) + c_x,  y = scale(logistic(t_y)) + c_y,  w = p_w e^{t_w},  h = p_h e^{t_h}
    C = logistic(t_o),  p(c_k) = logistic(c_k)
    1obj = max(IOU(anchors, truth))  and  IOU(anchors, truth) > iou_thresh
    L = λ_coord Σ_ij 1obj_ij (1 − CIOU(pred, truth))
      + λ_obj Σ_ij BCE(C_ij, Ĉ_ij)
      + λ_class Σ_ij 1obj_ij Σ_c BCE(p_i(c), p̂_i(c))

Where AlexeyAB darknet's `src/yolo_layer.c` (commit 59596d78, `process_batch`,
`delta_yolo_box`, `delta_yolo_class`, `averages_yolo_deltas`) and `src/box.c`
(`dx_box_iou`) depart from that formula; `darknet_compat=True` follows
yolo_layer.c exactly:

1. The backward pass adds `delta` to the raw outputs unchanged: no logistic
   derivative for x, y, objectness and classes, no `scale_x_y` or `1 / W`
   factor for x, y. Objectness and classes are then exactly BCE with logits.
2. x, y: `delta = iou_normalizer * ∂IoU_kind/∂(x, y)` of the decoded centre as
   `dx_box_iou` writes it: its distance term has the enclosing-box derivative
   with the opposite sign, and without overlap (`Iw <= 0 or Ih <= 0`) only the
   distance (and aspect) terms remain. w, h: `dx_box_iou`'s `p_dw = p_dr - p_dl`
   (twice the IoU derivative, "we do not divide by 2"), CIoU's aspect term
   `α 8/π² (atan(w_gt/h_gt) − atan(w/h)) h` without the `1/(w² + h²)` factor,
   times `e^{t_w}` (not the anchor). Not a derivative of any loss, so this
   mode uses `tf.custom_gradient` for the box term. No `(2 − w h)` weight.
3. Each (truth, anchor) box delta is clipped to `[-max_delta, max_delta]`
   (NaN/Inf set to 0) before truths sharing one anchor of one cell are summed;
   the sum is divided by the number of classes with a positive class delta
   there (`averages_yolo_deltas`, only when `iou_thresh < 1`).
4. An anchor gets no objectness push towards 0 when its predicted box has IoU
   above `ignore_thresh` with some truth AND any of its class probabilities
   exceeds 0.25, whatever the truth's class (`compare_yolo_class`).
5. `cls_normalizer` only scales darknet's class delta through per-class
   counters (`counters_per_class`), which this loss does not model: it has no
   effect in this mode. `truth_thresh` (1 in yolov4.cfg) is never reached and
   not modelled. At most `max_boxes` (darknet's `max=200`) truths per image.
6. Label smoothing: target `y (1 − ε) + ε / 2` for every class (both modes).

Reduction: per-image sums averaged over the batch (divided by B), so in
`darknet_compat` mode `-∂L/∂(raw) = delta / B` exactly, darknet's `delta` of
the same images (darknet averages over the batch in its weight update, so the
learning rates match). Multiply by B to get darknet's `delta` itself.

Two departures of ours from yolo_layer.c in both modes: a truth whose centre
sits exactly on the right/bottom edge (x = 1) goes to the last cell (darknet
writes out of bounds), and padded rows are marked by label -1 (darknet stops
at the first truth with x == 0).

TF Model Garden's `DarknetLoss` (tf-models-official 2.20.0,
`official/projects/yolo/losses/yolo_loss.py`, `ops/loss_utils.py`,
`ops/box_ops.py`) is written to reproduce these gradients; with
`objectness_smooth=0`, `box_type="original"`, `update_on_repeat=True` its
objectness and class gradients equal yolo_layer.c's (tests/test_v4.py).
Where it departs from yolo_layer.c:

- Box gradient: autodiff of `1 − CIoU` (`compute_ciou(darknet=True)`) in
  place of `dx_box_iou`: w, h get the true IoU derivative (darknet's is twice
  it), the enclosing-box part of the distance term has the true sign
  (darknet's the opposite), so x, y agree only while the predicted box lies
  inside its truth; the aspect term matches (v is scaled by w² + h²).
- `max_delta` clips each anchor's summed gradient after `iou_normalizer`,
  the division by repeats and the batch mean, not each truth's delta before
  the sum.
- Truths sharing an anchor: the box loss is divided by the number of
  distinct truth classes there (darknet: classes with a positive delta,
  which label smoothing can raise); with `update_on_repeat=False`
  (DarknetLoss's default) their class targets are averaged (0.5 / 0.5 for
  two classes) where darknet sets each to 1, and `cls_normalizer` scales the
  class loss.
- The ignore search (`PairWiseSearch`) runs over tiles of 50 truths and
  searches nothing with fewer than 100 truth rows (`M // 50 − 1` tiles), only
  the first `(M // 50 − 1) · 50` above; `DarknetLoss` defaults to
  `objectness_smooth=True` (darknet: off).
- Assignment is not in the loss but in the data pipeline (`ops/anchor.py`),
  and padded truth rows get scatter index −1, which eager CPU execution
  rejects (XLA drops them).
"""

import math

import keras
import tensorflow as tf

from keras_yolo import anchors as default_anchors
from keras_yolo import boxes as box_ops
from keras_yolo import grid
from keras_yolo.assign import matching
from keras_yolo.assign import yolo_v4 as assign_v4
from keras_yolo.checks import check_unit_interval
from keras_yolo.grid import MAX_LOG_SCALE, YOLOV4_SCALE_X_Y
from keras_yolo.losses.base import YoloLoss

IOU_LOSSES = ("iou", "giou", "diou", "ciou")
# compare_yolo_class(..., 0.25f): the class-confidence gate of the ignore rule.
DARKNET_CLASS_GATE = 0.25
# CIoU's alpha denominator guard in box.c: ar_loss / (1 - iou + ar_loss + 1e-6).
DARKNET_ALPHA_EPS = 1e-6
# AlexeyAB darknet names accepted as aliases of the seed's names.
ALIASES = {
    "iou_normalizer": "lambda_coord",
    "cls_normalizer": "lambda_class",
    "obj_normalizer": "lambda_obj",
    "label_smooth_eps": "label_smoothing",
}


def _safe_div(num, den):
    ok = tf.not_equal(den, 0.0)
    return tf.where(ok, num / tf.where(ok, den, 1.0), 0.0)


def darknet_dx_box_iou(pred, truth, iou_loss):
    """`dx_box_iou` of AlexeyAB darknet's box.c: its (dx, dy, dw, dh).

    Inputs are `(..., 4)` relative centre boxes `(x, y, w, h)`. Returns the
    `(..., 4)` "gradient" darknet adds (towards a larger IoU), written term
    by term from box.c (see the module docstring for where it is not a
    derivative). Divisions by zero give 0 here where box.c gives NaN that
    yolo_layer.c then sets to 0.
    """
    px, py, pw, ph = tf.unstack(pred, 4, axis=-1)
    tx, ty, tw, th = tf.unstack(truth, 4, axis=-1)
    top, bot = py - ph / 2, py + ph / 2
    left, right = px - pw / 2, px + pw / 2
    p_t, p_b = tf.minimum(top, bot), tf.maximum(top, bot)
    p_l, p_r = tf.minimum(left, right), tf.maximum(left, right)
    t_t, t_b, t_l, t_r = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    area = (p_b - p_t) * (p_r - p_l)
    area_truth = (t_b - t_t) * (t_r - t_l)
    ih = tf.minimum(p_b, t_b) - tf.maximum(p_t, t_t)
    iw = tf.minimum(p_r, t_r) - tf.maximum(p_l, t_l)
    inter = iw * ih  # not clamped, as in box.c
    union = area + area_truth - inter
    dist2 = tf.square(px - tx) + tf.square(py - ty)
    zero = tf.zeros_like(px)
    dx_t, dx_b = -(p_r - p_l), p_r - p_l
    dx_l, dx_r = -(p_b - p_t), p_b - p_t
    di_t = tf.where(p_t > t_t, -iw, zero)
    di_b = tf.where(p_b < t_b, iw, zero)
    di_l = tf.where(p_l > t_l, -ih, zero)
    di_r = tf.where(p_r < t_r, ih, zero)
    du = [dx_t - di_t, dx_b - di_b, dx_l - di_l, dx_r - di_r]
    di = [di_t, di_b, di_l, di_r]
    u2 = union * union
    p_dt, p_db, p_dl, p_dr = [
        tf.where(union > 0, _safe_div(union * i - inter * u, u2), zero)
        for i, u in zip(di, du)]
    # "correct corner selection": a no-op for boxes of positive size.
    p_dt = tf.where(top < bot, p_dt, p_db)
    p_db = tf.where(top < bot, p_db, p_dt)
    p_dl = tf.where(left < right, p_dl, p_dr)
    p_dr = tf.where(left < right, p_dr, p_dl)
    no_overlap = (iw <= 0) | (ih <= 0)
    if iou_loss == "giou":
        cw = tf.maximum(p_r, t_r) - tf.minimum(p_l, t_l)
        ch = tf.maximum(p_b, t_b) - tf.minimum(p_t, t_t)
        c_area = cw * ch
        dc = [tf.where(p_t < t_t, -cw, zero), tf.where(p_b > t_b, cw, zero),
              tf.where(p_l < t_l, -ch, zero), tf.where(p_r > t_r, ch, zero)]
        giou = [_safe_div(c_area * u - union * c, c_area * c_area)
                for u, c in zip(du, dc)]
        p_dt, p_db, p_dl, p_dr = [
            tf.where(no_overlap, g, p + tf.where(c_area > 0, g, zero))
            for p, g in zip([p_dt, p_db, p_dl, p_dr], giou)]
    p_dx, p_dy = p_dl + p_dr, p_dt + p_db
    p_dw, p_dh = p_dr - p_dl, p_db - p_dt  # "we do not divide by 2"
    if iou_loss in ("diou", "ciou"):
        c_t = tf.minimum(py - ph / 2, t_t)
        c_b = tf.maximum(py + ph / 2, t_b)
        c_l = tf.minimum(px - pw / 2, t_l)
        c_r = tf.maximum(px + pw / 2, t_r)
        cw, ch = c_r - c_l, c_b - c_t
        c2 = cw * cw + ch * ch
        one = tf.ones_like(px)
        dcw_dx = tf.where(p_r > t_r, one, zero) - tf.where(p_l < t_l, one, zero)
        dcw_dw = (tf.where(p_r > t_r, 0.5 * one, zero)
                  - tf.where(p_l < t_l, -0.5 * one, zero))
        dch_dy = tf.where(p_b > t_b, one, zero) - tf.where(p_t < t_t, one, zero)
        dch_dh = (tf.where(p_b > t_b, 0.5 * one, zero)
                  - tf.where(p_t < t_t, -0.5 * one, zero))
        cc = c2 * c2
        d_x = _safe_div(2 * (tx - px) * c2 - 2 * cw * dcw_dx * dist2, cc)
        d_y = _safe_div(2 * (ty - py) * c2 - 2 * ch * dch_dy * dist2, cc)
        d_w = _safe_div(2 * cw * dcw_dw * dist2, cc)
        d_h = _safe_div(2 * ch * dch_dh * dist2, cc)
        if iou_loss == "ciou":
            d_atan = tf.atan(_safe_div(tw, th)) - tf.atan(_safe_div(pw, ph))
            ar_loss = 4 / math.pi**2 * d_atan * d_atan
            alpha = _safe_div(
                ar_loss, 1 - _safe_div(inter, union) + ar_loss
                + DARKNET_ALPHA_EPS)
            d_w += alpha * 8 / math.pi**2 * d_atan * ph
            d_h += alpha * -8 / math.pi**2 * d_atan * pw
        dist = [d_x, d_y, d_w, d_h]
        p_dx, p_dy, p_dw, p_dh = [
            tf.where(no_overlap, d, p + tf.where(c2 > 0, d, zero))
            for p, d in zip([p_dx, p_dy, p_dw, p_dh], dist)]
    return tf.stack([p_dx, p_dy, p_dw, p_dh], axis=-1)


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV4Loss(YoloLoss):
    """YOLOv4 objective (Bochkovskiy, Wang & Liao 2020).

        L = λ_coord Σ 1obj (1 − CIoU(pred, truth)) + λ_obj Σ BCE(C, Ĉ)
          + λ_class Σ 1obj Σ_c BCE(p(c), p̂(c))

    with `1obj` the best anchor (over all levels) and every anchor whose
    shape IoU with the truth exceeds `iou_thresh`, x, y decoded with
    `scale_x_y * logistic(t) − (scale_x_y − 1) / 2`, and no objectness loss
    for non-responsible anchors whose predicted box overlaps a truth by more
    than `ignore_thresh`. A truth responsible at several anchors adds one box
    and one class term for each; truths sharing one anchor add their box
    terms and share a multi-hot class target. IoUs are measured in pixels.

    `darknet_compat=True` reproduces AlexeyAB darknet's yolo layer exactly
    (see this module's docstring for every difference, including the custom
    w, h gradient and `max_delta` clipping, which only this mode applies);
    then, with the default reduction, `-∂L/∂(raw) = delta / B`.

    Reduction: every term is a sum over one image (darknet's `delta` is per
    image), so all of `YoloLoss`'s reductions are honest: the default
    `"sum_over_batch_size"` averages the per-image sums over the batch (the
    value this loss always had), `"sum"` adds them, `"none"` gives the `(B,)`
    per-image losses, and a `(B,)` `sample_weight` weights them (in
    `darknet_compat` mode the custom box gradient is weighted the same way).

    Args:
        num_classes: C.
        anchors: `(3, 3, 2)` anchors `(w, h)` in input pixels, levels in
            ascending stride; default cfg/yolov4.cfg's.
        strides: stride of each level, default `(8, 16, 32)`.
        bounding_box_format: format of `y_true["boxes"]`.
        lambda_coord: box weight (darknet `iou_normalizer`), default 0.07.
        lambda_obj: objectness weight (darknet `obj_normalizer`), default 1.
        lambda_class: class weight (darknet `cls_normalizer`), default 1.
        iou_thresh: extra responsible anchors above this shape IoU, 0.213.
        ignore_thresh: 0.7.
        scale_x_y: per level, default `(1.2, 1.1, 1.05)`.
        iou_loss: `"iou"`, `"giou"`, `"diou"` or `"ciou"` (default).
        label_smoothing: ε (darknet `label_smooth_eps`), default 0.
        max_delta: box delta clip of `darknet_compat` mode, default 5.
        darknet_compat: follow yolo_layer.c exactly.
        max_boxes: truths per image used by `darknet_compat`, default 200.
        reduction: one of `keras_yolo.losses.base.REDUCTIONS`.

    Call:
        y_true: `{"boxes": (B, M, 4), "labels": (B, M)}`, negative labels
            pad; B and M may be unknown until run time (`padded_batch`).
            Rows that break the ground-truth policy
            (`keras_yolo.assign.groundtruth`: label >= C or not an integer,
            non-finite coordinate, empty or off-image box) raise
            `GroundTruthError` eagerly and are masked (as padding) inside
            `tf.function` / XLA.
        y_pred: list of `(B, H_l, W_l, A, 5 + C)` raw outputs (any float
            dtype; computed in float32). Any finite value gives a finite
            loss and gradient: `t_w, t_h` are clipped to ±20 in the decoding
            (`MAX_LOG_SCALE`), where darknet's `exp` overflows to inf boxes
            and NaN IoUs (its `fix_nan_inf` then zeroes the delta).

    Example:
        >>> loss = YoloV4Loss(num_classes=80, iou_normalizer=0.07)
        >>> total = loss({"boxes": boxes, "labels": labels}, [p3, p4, p5])
        >>> loss.components(y_true, [p3, p4, p5])  # {"box", "obj", "cls"}
    """

    def __init__(self, num_classes, anchors=None, strides=(8, 16, 32),
                 bounding_box_format="rel_center_xywh", lambda_coord=0.07,
                 lambda_obj=1.0, lambda_class=1.0, iou_thresh=0.213,
                 ignore_thresh=0.7, scale_x_y=YOLOV4_SCALE_X_Y,
                 iou_loss="ciou", label_smoothing=0.0, max_delta=5.0,
                 darknet_compat=False, max_boxes=200,
                 reduction="sum_over_batch_size", name="yolo_v4_loss",
                 dtype=None, **kwargs):
        seed_values = dict(lambda_coord=lambda_coord, lambda_obj=lambda_obj,
                           lambda_class=lambda_class,
                           label_smoothing=label_smoothing)
        defaults = dict(lambda_coord=0.07, lambda_obj=1.0, lambda_class=1.0,
                        label_smoothing=0.0)
        for alias, value in kwargs.items():  # darknet's names
            if alias not in ALIASES:
                raise TypeError(
                    f"YoloV4Loss got an unexpected argument {alias!r}.")
            seed_name = ALIASES[alias]
            if seed_values[seed_name] != defaults[seed_name]:
                raise ValueError(
                    f"Pass either `{seed_name}` or its darknet alias "
                    f"`{alias}`, not both."
                )
            seed_values[seed_name] = value
        super().__init__(num_classes, bounding_box_format,
                         reduction=reduction, name=name, dtype=dtype)
        if iou_loss not in IOU_LOSSES:
            raise ValueError(
                f"`iou_loss` must be one of {IOU_LOSSES}; got {iou_loss!r}."
            )
        if anchors is None:
            anchors = default_anchors.YOLOV4_ANCHORS
        self.anchors = [[[float(v) for v in a] for a in level]
                        for level in anchors]
        sizes = {len(level) for level in self.anchors}
        if len(sizes) != 1 or any(len(a) != 2 or min(a) <= 0
                                  for level in self.anchors for a in level):
            raise ValueError(
                "`anchors` must be (levels, anchors_per_level, 2) positive "
                f"(w, h) pairs; got {anchors!r}."
            )
        self.strides = tuple(int(s) for s in strides)
        if len(self.strides) != len(self.anchors):
            raise ValueError(
                f"`strides` needs one value per anchor level "
                f"({len(self.anchors)}); got {strides!r}."
            )
        self.scale_x_y = grid.level_list(scale_x_y, len(self.anchors),
                                         "scale_x_y")
        check_unit_interval(iou_thresh=iou_thresh, ignore_thresh=ignore_thresh)
        if not 0.0 <= seed_values["label_smoothing"] < 1.0:
            raise ValueError(
                "`label_smoothing` must be in [0, 1); got "
                f"{seed_values['label_smoothing']!r}."
            )
        if max_delta is not None and max_delta <= 0:
            raise ValueError(f"`max_delta` must be positive; got {max_delta!r}.")
        self.lambda_coord = float(seed_values["lambda_coord"])
        self.lambda_obj = float(seed_values["lambda_obj"])
        self.lambda_class = float(seed_values["lambda_class"])
        self.label_smoothing = float(seed_values["label_smoothing"])
        self.iou_thresh = float(iou_thresh)
        self.ignore_thresh = float(ignore_thresh)
        self.iou_loss = iou_loss
        self.max_delta = None if max_delta is None else float(max_delta)
        self.darknet_compat = bool(darknet_compat)
        self.max_boxes = int(max_boxes)

    # -- inputs ---------------------------------------------------------------
    def _truths(self, truth):
        """Truths with darknet's row limit and padded rows made harmless."""
        valid = truth.valid
        if self.darknet_compat:
            index = tf.range(tf.shape(truth.labels)[1])[None, :]
            valid &= index < self.max_boxes
        # Padded rows may hold anything: replace them by a harmless box.
        boxes = tf.where(valid[..., None], truth.boxes,
                         tf.constant([0.5, 0.5, 0.1, 0.1], tf.float32))
        return boxes, tf.where(valid, truth.labels, 0), valid

    # -- terms ------------------------------------------------------------------
    def _ignored(self, pred, raw, truths, valid):
        """(B, H, W, A) bool: negatives exempt from the no-object push."""
        shape = tf.shape(pred)
        best, _ = matching.best_truth_iou(
            tf.reshape(pred, (shape[0], -1, 4)), truths, valid,
            convention="stable")
        best = tf.reshape(best, shape[:4])
        if self.darknet_compat:
            gate = tf.reduce_any(tf.sigmoid(raw[..., 5:]) > DARKNET_CLASS_GATE,
                                 axis=-1)
            best = tf.where(gate, best, 0.0)
        return tf.stop_gradient(best > self.ignore_thresh)

    def _level_terms(self, level, raw, truths, labels, valid, assignment,
                     image_shape):
        anchors = self.anchors[level]
        pred = grid.decode_boxes(raw, anchors, self.strides[level],
                                 scale_x_y=self.scale_x_y[level])
        shape = tf.shape(raw)
        batch, grid_h, grid_w = shape[0], shape[1], shape[2]
        num_anchors = len(anchors)
        num_truths = tf.shape(labels)[1]
        mask = assignment["mask"][:, :, level]  # (B, M, A)
        maskf = tf.cast(mask, tf.float32)
        cells = assignment["cells"][:, :, level]  # (B, M, 2)
        pair_shape = (batch, num_truths, num_anchors)
        b_idx = tf.broadcast_to(tf.range(batch)[:, None, None], pair_shape)
        a_idx = tf.broadcast_to(tf.range(num_anchors)[None, None, :],
                                pair_shape)
        j_idx = tf.broadcast_to(cells[:, :, None, 0], pair_shape)
        i_idx = tf.broadcast_to(cells[:, :, None, 1], pair_shape)
        indices = tf.stack([b_idx, j_idx, i_idx, a_idx], axis=-1)
        anchor_grid = (batch, grid_h, grid_w, num_anchors)
        positive = tf.scatter_nd(indices, maskf, anchor_grid) > 0
        onehot = tf.one_hot(labels, self.num_classes)[:, :, None, :]
        hot = tf.scatter_nd(indices, maskf[..., None] * onehot,
                            tf.concat([anchor_grid, [self.num_classes]], 0))
        eps = self.label_smoothing
        class_target = tf.minimum(hot, 1.0) * (1.0 - eps) + 0.5 * eps

        # Objectness: BCE everywhere but on ignored negatives.
        ignored = self._ignored(pred, raw, truths, valid)
        keep = tf.cast(positive | ~ignored, tf.float32)
        obj = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.cast(positive, tf.float32), logits=raw[..., 4])
        obj = self.lambda_obj * tf.reduce_sum(obj * keep, axis=[1, 2, 3])

        # Classes: multi-hot BCE on responsible anchors.
        cls = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=class_target, logits=raw[..., 5:])
        cls = tf.reduce_sum(cls * tf.cast(positive, tf.float32)[..., None],
                            axis=[1, 2, 3, 4])
        if not self.darknet_compat:
            cls = self.lambda_class * cls

        pred_pairs = tf.gather_nd(pred, indices)  # (B, M, A, 4)
        truth_pairs = tf.broadcast_to(truths[:, :, None, :],
                                      tf.shape(pred_pairs))
        if not self.darknet_compat:
            scale = tf.cast(tf.stack([image_shape[1], image_shape[0]] * 2),
                            tf.float32)
            overlap = box_ops.iou(pred_pairs * scale, truth_pairs * scale,
                                  "center_xywh", variant=self.iou_loss)
            box = self.lambda_coord * tf.reduce_sum(
                tf.where(mask, 1.0 - overlap, 0.0), axis=[1, 2])
            return box, obj, cls
        box = self._darknet_box(raw, pred, pred_pairs, truth_pairs, indices,
                                mask, positive, class_target, anchor_grid)
        return box, obj, cls

    def _darknet_box(self, raw, pred, pred_pairs, truth_pairs, indices, mask,
                     positive, class_target, anchor_grid):
        """Per-image box term `(B,)` whose gradient is darknet's `-delta`
        (custom gradient)."""
        raw_sg = tf.stop_gradient(raw)
        pairs = tf.stop_gradient(pred_pairs)
        # delta_yolo_box: "avoid nan in dx_box_iou".
        wh = pairs[..., 2:4]
        pairs = tf.concat([pairs[..., :2], tf.where(wh == 0, 1.0, wh)], -1)
        delta = darknet_dx_box_iou(pairs, truth_pairs, self.iou_loss)
        # e^{t_w} of the decoded (clipped) size, not of the raw t_w.
        exp_wh = tf.exp(tf.clip_by_value(
            tf.gather_nd(raw_sg, indices)[..., 2:4], -MAX_LOG_SCALE,
            MAX_LOG_SCALE))
        delta = tf.concat([delta[..., :2], delta[..., 2:] * exp_wh], -1)
        delta = self.lambda_coord * delta
        delta = tf.where(tf.math.is_finite(delta), delta, 0.0)
        if self.max_delta is not None:
            delta = tf.clip_by_value(delta, -self.max_delta, self.max_delta)
        delta = tf.where(mask[..., None], delta, 0.0)
        delta = tf.scatter_nd(indices, delta, tf.concat([anchor_grid, [4]], 0))
        # averages_yolo_deltas: divide by the classes with a positive delta.
        count = tf.ones(anchor_grid)
        if self.iou_thresh < 1.0:
            probs = tf.sigmoid(raw_sg[..., 5:])
            count = tf.reduce_sum(
                tf.cast(class_target - probs > 0, tf.float32), axis=-1)
            obj_delta = self.lambda_obj * (1.0 - tf.sigmoid(raw_sg[..., 4]))
            use = positive & (obj_delta != 0) & (count > 0)
            count = tf.where(use, count, 1.0)
        delta = delta / count[..., None]
        overlap = box_ops.iou(tf.stop_gradient(pred_pairs), truth_pairs,
                              "rel_center_xywh", variant=self.iou_loss)
        per_pair = self.lambda_coord * (1.0 - overlap) / tf.gather_nd(
            count, indices)
        value = tf.reduce_sum(tf.where(mask, per_pair, 0.0), axis=[1, 2])

        @tf.custom_gradient
        def box_term(raw_box):
            def grad(upstream):  # (B,): one weight per image's box term
                return -upstream[:, None, None, None, None] * delta
            return tf.identity(value), grad

        return box_term(raw[..., 0:4])

    def terms(self, truth, levels):
        """The per-image terms `{"box", "obj", "cls"}`, each `(B,)`."""
        image_shape = self.input_image_shape(levels)
        truths, labels, valid = self._truths(truth)
        grid_shapes = [(tf.shape(raw)[1], tf.shape(raw)[2]) if
                       raw.shape[1] is None or raw.shape[2] is None
                       else (raw.shape[1], raw.shape[2]) for raw in levels]
        assignment = assign_v4.assign(truths, valid, self.anchors,
                                      grid_shapes, image_shape,
                                      self.iou_thresh)
        totals = {"box": 0.0, "obj": 0.0, "cls": 0.0}
        for level, raw in enumerate(levels):
            box, obj, cls = self._level_terms(level, raw, truths, labels,
                                              valid, assignment, image_shape)
            totals["box"] += box
            totals["obj"] += obj
            totals["cls"] += cls
        return totals

    def get_config(self):
        return dict(
            super().get_config(), anchors=self.anchors,
            strides=list(self.strides),
            lambda_coord=self.lambda_coord, lambda_obj=self.lambda_obj,
            lambda_class=self.lambda_class, iou_thresh=self.iou_thresh,
            ignore_thresh=self.ignore_thresh,
            scale_x_y=list(self.scale_x_y), iou_loss=self.iou_loss,
            label_smoothing=self.label_smoothing, max_delta=self.max_delta,
            darknet_compat=self.darknet_compat, max_boxes=self.max_boxes)
