"""The YOLOv5 objective, as ultralytics yolov5 7.0.14 `utils/loss.py:ComputeLoss`."""

import keras
import numpy as np
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.anchors import STRIDES, YOLOV5_ANCHORS
from keras_yolo.assign.yolo_v5 import build_targets
from keras_yolo.checks import check_unit_interval
from keras_yolo.losses.base import YoloLoss

# ComputeLoss's per-level objectness weights: P3-P5, or P3-P7 for other
# level counts (the first `levels` entries).
BALANCE_3 = (4.0, 1.0, 0.4)
BALANCE_OTHER = (4.0, 1.0, 0.25, 0.06, 0.02)
# FocalLoss's fixed alpha (ultralytics does not expose it).
FOCAL_ALPHA = 0.25
# autobalance: balance_l <- balance_l * MOMENTUM + (1 - MOMENTUM) / L_obj,l.
AUTOBALANCE_MOMENTUM = 0.9999
# train.py scales gains relative to 3 levels, 80 classes and 640 pixels.
REFERENCE_LEVELS, REFERENCE_CLASSES, REFERENCE_IMAGE_SIZE = 3, 80, 640


def default_balance(levels):
    """ComputeLoss's `balance` for `levels` detection levels."""
    table = BALANCE_3 if levels == 3 else BALANCE_OTHER
    if levels > len(table):
        raise ValueError(
            f"ultralytics defines `balance` for up to {len(table)} levels; "
            f"got {levels} levels: pass `balance` explicitly.")
    return tuple(table[:levels])


def scale_hyperparameters(box=0.05, obj=1.0, cls=0.5, num_levels=3,
                          num_classes=80, image_size=640):
    """train.py's scaling of the loss gains (yolov5 7.0.14, lines 255-258).

        box <- box * 3 / nl
        cls <- cls * nc / 80 * 3 / nl
        obj <- obj * (imgsz / 640)^2 * 3 / nl

    `YoloV5Loss` takes its gains as final values: pass it this function's
    output to train as ultralytics' train.py does.

    Example:
        >>> YoloV5Loss(num_classes=3, **scale_hyperparameters(
        ...     num_classes=3, image_size=320))
    """
    level_scale = REFERENCE_LEVELS / num_levels
    return {
        "box": box * level_scale,
        "cls": cls * num_classes / REFERENCE_CLASSES * level_scale,
        "obj": obj * (image_size / REFERENCE_IMAGE_SIZE) ** 2 * level_scale,
    }


def _bce_with_logits(logits, targets, pos_weight):
    """torch BCEWithLogitsLoss(pos_weight=p), elementwise:
    `-(p y log s(x) + (1 - y) log(1 - s(x)))`."""
    log_weight = 1.0 + (pos_weight - 1.0) * targets
    return (1.0 - targets) * logits + log_weight * tf.nn.softplus(-logits)


def _criterion(logits, targets, pos_weight, fl_gamma):
    """Elementwise BCE, wrapped in ultralytics' FocalLoss when fl_gamma > 0:
    `BCE * (y a + (1 - y)(1 - a)) * (1 - p_t)^gamma`."""
    loss = _bce_with_logits(logits, targets, pos_weight)
    if fl_gamma > 0:
        prob = tf.sigmoid(logits)
        p_t = targets * prob + (1.0 - targets) * (1.0 - prob)
        alpha = targets * FOCAL_ALPHA + (1.0 - targets) * (1.0 - FOCAL_ALPHA)
        loss = loss * alpha * tf.pow(1.0 - p_t, fl_gamma)
    return loss


@tf.custom_gradient
def _objectness_and_rows(rows, cell):
    """`rows[:, 4]` and `rows[cell]` of `(N, 5 + C)` predictions.

    Autodiff would write three full-size gradients (the slice's, the
    gather's, their sum); this writes one: the objectness column padded to
    full width, then the picked rows added into that fresh buffer. Outside
    XLA they are added in place (`InplaceAdd`, which accumulates repeated
    rows in turn; `tensor_scatter_nd_add` copies its input there, 4x slower
    at batch 16, 640 px); XLA has no `InplaceAdd` and updates its scatter's
    buffer in place itself.
    """
    channels = rows.shape[-1]

    def grad(d_obj, d_picked):
        if d_obj is None:
            d_obj = tf.zeros(tf.shape(rows)[0:1], rows.dtype)
        full = tf.pad(d_obj[:, None], [[0, 0], [4, channels - 5]])
        if d_picked is None:
            return full, None
        # TF's exported test (tf_keras uses it too) for "this graph is
        # being compiled by XLA".
        if tf.__internal__.get_enclosing_xla_context() is not None:
            return tf.tensor_scatter_nd_add(full, cell[:, None],
                                            d_picked), None
        # `full` is this function's own temporary: writing into it is safe.
        return tf.raw_ops.InplaceAdd(x=full, i=cell, v=d_picked), None

    return (rows[:, 4], tf.gather(rows, cell)), grad


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV5Loss(YoloLoss):
    """YOLOv5 objective (ultralytics yolov5 7.0.14 `ComputeLoss`).

    With positives P_l of level l (truths assigned by `build_targets`: anchor
    ratio match, three cells per truth) and all cells C_l:

        L_box = box * sum_l mean_{P_l} (1 - CIoU(b̂, b))
        L_obj = obj * sum_l balance_l * mean_{C_l} BCE(t_o, tobj)
                tobj = (1 - gr) + gr * clamp(CIoU, 0) (no gradient) at P_l,
                0 elsewhere; of several positives on one (anchor, cell) the
                last in ultralytics' order wins, or the highest IoU with
                `sort_obj_iou`
        L_cls = cls * sum_l mean_{P_l, c} BCE(c_c, smooth(y_c))   (C > 1)
                smooth: 1 - eps/2 for the class, eps/2 otherwise

    with b̂_xy = 2 sigmoid(t_xy) - 0.5, b̂_wh = (2 sigmoid(t_wh))² a (cells),
    BCE with `pos_weight` (`obj_pw`, `cls_pw`), focal-wrapped (gamma
    `fl_gamma`, alpha 0.25) when `fl_gamma > 0`.

    Shapes and cost: the batch size and the box count `M` may be known only
    at run time (a `padded_batch` dataset). Only the positive (truth,
    anchor, cell) slots are gathered, so eagerly and in graph mode the cost
    is the read of the predictions, the write of their gradient, and a term
    linear in the real truths, whatever the padding. Under XLA the same
    gathered slots have a bounded dynamic shape: XLA sizes its buffers for
    the bound (all `B M A 5` slots), so there keep `M` tight.
    Ground truth goes through `keras_yolo.assign.groundtruth` (invalid rows
    raise eagerly, are masked when compiled) in the `YoloLoss` base.

    Reduction: the means above run over the positives and cells of the
    whole batch, as ComputeLoss's do, so the loss has no per-image values:
    `reduction="none"` and `"mean_with_sample_weight"` are refused, and
    `sample_weight` may only be a scalar. The default
    (`"sum_over_batch_size"`) is `L_box + L_obj + L_cls`, which does not
    grow with the batch size; `"sum"` is B times it, exactly ComputeLoss's
    returned total (`scale_by_batch_size=True` is the same).

    State: with `autobalance=True` the per-level objectness weights live in
    the non-trainable float64 `keras.Variable` `balance_state` (serialized
    by `get_config`). `loss(...)` and `compute_terms(...)` evaluate with the
    current weights, then advance them once, as ComputeLoss:
    `balance_l <- 0.9999 balance_l + 0.0001 / L_obj,l`, then divided by the
    stride-16 level's weight. `components(...)` never moves them.

    Args:
        num_classes: C.
        anchors: `(levels, A, 2)` anchor `(w, h)` in input pixels.
        strides: stride of each level, ascending.
        bounding_box_format: format of `y_true["boxes"]`; pixel formats are
            read against the input size `H_0 * strides[0]`.
        box, obj, cls: final loss gains (see `scale_hyperparameters` for
            train.py's scaling by level count, class count and image size).
        anchor_t: anchor-multiple threshold of the ratio match.
        balance: per-level objectness weights (default ComputeLoss's).
        gr: IoU ratio of the objectness target.
        label_smoothing: eps of `smooth_BCE`.
        fl_gamma: focal loss gamma, 0 for plain BCE.
        cls_pw, obj_pw: BCE positive weights.
        sort_obj_iou: the highest IoU wins a shared (anchor, cell).
        autobalance: advance `balance_state` after every evaluation.
        balance_state: current per-level weights (default `balance`); set
            by `from_config` to resume.
        scale_by_batch_size: same as `reduction="sum"`.
        reduction: `"sum_over_batch_size"` (default), `"mean"` or `"sum"`.

    Example:
        >>> loss = YoloV5Loss(num_classes=80)
        >>> total = loss({"boxes": boxes, "labels": labels}, [p3, p4, p5])
        >>> total, parts = loss.compute_terms(
        ...     {"boxes": boxes, "labels": labels}, [p3, p4, p5])
        >>> sorted(parts)
        ['box', 'cls', 'obj']
    """

    per_image = False

    def __init__(self, num_classes, anchors=YOLOV5_ANCHORS,
                 strides=STRIDES, bounding_box_format="rel_center_xywh",
                 box=0.05, obj=1.0, cls=0.5, anchor_t=4.0, balance=None,
                 gr=1.0, label_smoothing=0.0, fl_gamma=0.0, cls_pw=1.0,
                 obj_pw=1.0, sort_obj_iou=False, autobalance=False,
                 balance_state=None, scale_by_batch_size=False,
                 reduction="sum_over_batch_size", name="yolo_v5_loss",
                 dtype=None):
        if scale_by_batch_size:
            if reduction not in ("sum", "sum_over_batch_size"):
                raise ValueError(
                    "`scale_by_batch_size=True` is `reduction='sum'`; got "
                    f"reduction={reduction!r} as well.")
            reduction = "sum"
        super().__init__(num_classes, bounding_box_format,
                         reduction=reduction, name=name, dtype=dtype)
        anchors = np.asarray(anchors, np.float32)
        if anchors.ndim != 3 or anchors.shape[-1] != 2:
            raise ValueError(
                "`anchors` must have shape (levels, anchors_per_level, 2); "
                f"got shape {anchors.shape}.")
        levels = anchors.shape[0]
        if len(strides) != levels:
            raise ValueError(
                f"`strides` needs one stride per anchor level ({levels}); "
                f"got strides={tuple(strides)}.")
        for key, value in (("anchor_t", anchor_t), ("cls_pw", cls_pw),
                           ("obj_pw", obj_pw)):
            if not value > 0:
                raise ValueError(f"`{key}` must be > 0; got {value!r}.")
        check_unit_interval(gr=gr)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1); got {label_smoothing!r}.")
        if fl_gamma < 0:
            raise ValueError(f"`fl_gamma` must be >= 0; got {fl_gamma!r}.")
        balance = default_balance(levels) if balance is None else balance
        state = balance if balance_state is None else balance_state
        for key, value in (("balance", balance), ("balance_state", state)):
            if len(value) != levels:
                raise ValueError(
                    f"`{key}` needs one weight per level ({levels}); got "
                    f"{tuple(value)}.")
        if autobalance and 16 not in tuple(strides):
            raise ValueError(
                "`autobalance` normalises by the stride-16 level; got "
                f"strides={tuple(strides)}.")
        self.anchors = anchors.tolist()
        self.strides = tuple(int(s) for s in strides)
        self.box, self.obj, self.cls = float(box), float(obj), float(cls)
        self.anchor_t = float(anchor_t)
        self.balance = tuple(float(b) for b in balance)
        self.gr = float(gr)
        self.label_smoothing = float(label_smoothing)
        self.fl_gamma = float(fl_gamma)
        self.cls_pw, self.obj_pw = float(cls_pw), float(obj_pw)
        self.sort_obj_iou = bool(sort_obj_iou)
        self.autobalance = bool(autobalance)
        # ComputeLoss keeps balance as Python floats (double precision).
        self.balance_state = keras.Variable(
            [float(b) for b in state], dtype="float64", trainable=False,
            name="balance_state", aggregation="only_first_replica")

    # -- the objective --------------------------------------------------
    def _level(self, preds, level, boxes, labels):
        """Box, objectness (unbalanced) and class terms of one level."""
        _, height, width, _, channels = preds.shape
        dynamic = tf.shape(preds)
        height = dynamic[1] if height is None else height
        width = dynamic[2] if width is None else width
        # ultralytics stores anchors in cells of the level: pixels / stride.
        anchors = (tf.constant(self.anchors[level], tf.float32)
                   / float(self.strides[level]))
        t = build_targets(boxes, labels, (height, width), anchors,
                          self.anchor_t, compact=True)
        count = tf.cast(tf.size(t["cell"]), tf.float32)
        safe_count = tf.maximum(count, 1.0)
        rows = tf.reshape(preds, [-1, channels])  # (B H W A, 5 + C)
        obj_logits, picked = _objectness_and_rows(rows, t["cell"])

        pxy = tf.sigmoid(picked[:, 0:2]) * 2.0 - 0.5
        pwh = tf.square(tf.sigmoid(picked[:, 2:4]) * 2.0) * t["anchor_wh"]
        # bbox_iou(..., xywh=True, CIoU=True) with its eps placements.
        overlap = box_ops.iou(tf.concat([pxy, pwh], -1), t["box"],
                              "center_xywh", "ciou",
                              convention="ultralytics")
        lbox = tf.reduce_sum(1.0 - overlap) / safe_count

        # Objectness target, "last write wins" as tobj[b, a, gj, gi] = iou.
        score = tf.maximum(tf.stop_gradient(overlap), 0.0)
        score = (1.0 - self.gr) + self.gr * score
        cells = tf.shape(rows)[0:1]
        cell = t["cell"][:, None]
        if not self.sort_obj_iou:
            order = t["order"]
            last = tf.tensor_scatter_nd_max(tf.fill(cells, -1), cell, order)
            score = tf.where(tf.gather(last, t["cell"]) == order, score, 0.0)
        tobj = tf.tensor_scatter_nd_max(tf.zeros(cells, tf.float32), cell,
                                        score)
        lobj = tf.reduce_mean(
            _criterion(obj_logits, tobj, self.obj_pw, self.fl_gamma))

        lcls = tf.zeros([], tf.float32)
        if self.num_classes > 1:
            positive = 1.0 - 0.5 * self.label_smoothing  # smooth_BCE
            negative = 0.5 * self.label_smoothing
            target = tf.one_hot(t["label"], self.num_classes,
                                on_value=positive, off_value=negative)
            bce = _criterion(picked[:, 5:], target, self.cls_pw,
                             self.fl_gamma)
            lcls = tf.reduce_sum(bce) / (safe_count * self.num_classes)
        return lbox, lobj, lcls

    def terms(self, truth, levels):
        """`{"box", "obj", "cls"}`: ComputeLoss's `lbox, lobj, lcls` (gains
        applied, before the reduction), and each level's unbalanced
        objectness loss for `advance_state`."""
        balance = tf.cast(tf.convert_to_tensor(self.balance_state),
                          tf.float32)
        lbox = lobj = lcls = tf.zeros([], tf.float32)
        level_obj = []
        for i, preds in enumerate(levels):
            box_i, obj_i, cls_i = self._level(preds, i, truth.boxes,
                                              truth.labels)
            lbox += box_i
            lcls += cls_i
            lobj += obj_i * balance[i]
            level_obj.append(obj_i)
        return ({"box": lbox * self.box, "obj": lobj * self.obj,
                 "cls": lcls * self.cls}, level_obj)

    def advance_state(self, truth, levels, aux):
        """ComputeLoss's autobalance step, from the levels' objectness."""
        if not self.autobalance:
            return
        balance = tf.convert_to_tensor(self.balance_state)
        updated = []
        for i, obj_i in enumerate(aux):
            # ComputeLoss divides by zero (ZeroDivisionError) when a level's
            # objectness loss is exactly 0 (logits of -1e4 and no truth);
            # that level's weight is then left unchanged.
            obj64 = tf.cast(tf.stop_gradient(obj_i), tf.float64)
            usable = (obj64 > 0.0) & tf.math.is_finite(obj64)
            updated.append(tf.where(
                usable,
                balance[i] * AUTOBALANCE_MOMENTUM
                + (1.0 - AUTOBALANCE_MOMENTUM) / tf.where(usable, obj64, 1.0),
                balance[i]))
        new = tf.stack(updated)
        self.balance_state.assign(new / new[self.strides.index(16)])

    def get_config(self):
        return dict(
            super().get_config(), anchors=self.anchors,
            strides=self.strides, box=self.box, obj=self.obj, cls=self.cls,
            anchor_t=self.anchor_t, balance=self.balance, gr=self.gr,
            label_smoothing=self.label_smoothing, fl_gamma=self.fl_gamma,
            cls_pw=self.cls_pw, obj_pw=self.obj_pw,
            sort_obj_iou=self.sort_obj_iou, autobalance=self.autobalance,
            balance_state=[float(b) for b in self.balance_state.numpy()])
