"""The YOLOv5 objective, as ultralytics yolov5 7.0.14 `utils/loss.py:ComputeLoss`."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.anchors import STRIDES, YOLOV5_ANCHORS
from keras_yolo.assign import groundtruth
from keras_yolo.assign.yolo_v5 import build_targets

try:  # TF's own test for "this graph is being compiled by XLA".
    from tensorflow.python.ops import control_flow_util
except ImportError:  # pragma: no cover - a TF without it: always masked
    control_flow_util = None

# ComputeLoss's per-level objectness weights: P3-P5, or P3-P7 for other
# level counts (the first `levels` entries).
BALANCE_3 = (4.0, 1.0, 0.4)
BALANCE_OTHER = (4.0, 1.0, 0.25, 0.06, 0.02)
# bbox_iou's eps: keeps unions and enclosing diagonals away from zero.
CIOU_EPS = 1e-7
# Smallest height in CIoU's aspect term `atan(w / h)` (cells).
MIN_HEIGHT = 1e-12
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


def _compiling_with_xla():
    """XLA compiles static shapes: there every padded slot stays, masked
    (cost linear in the padded rows); elsewhere only positives are kept."""
    if control_flow_util is None:
        return True
    return control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph())


@tf.custom_gradient
def _objectness_and_rows(rows, cell):
    """`rows[:, 4]` and `rows[cell]` of `(N, 5 + C)` predictions.

    Autodiff would write three full-size gradients (the slice's, the
    gather's, their sum) and `tensor_scatter_nd_add` copies its input; this
    writes one: the objectness column padded to full width, then the picked
    rows added into that fresh buffer in place (`InplaceAdd` accumulates
    repeated rows in turn). Measured at batch 16, 640 px, one thread: 20 ms
    of CPU against 34 ms, the copy of the predictions being 11 ms.
    """
    channels = rows.shape[-1]

    def grad(d_obj, d_picked):
        if d_obj is None:
            d_obj = tf.zeros(tf.shape(rows)[0:1], rows.dtype)
        full = tf.pad(d_obj[:, None], [[0, 0], [4, channels - 5]])
        if d_picked is not None:
            # `full` is this function's own temporary, so writing into it
            # is safe.
            full = tf.raw_ops.InplaceAdd(x=full, i=cell, v=d_picked)
        return full, None

    return (rows[:, 4], tf.gather(rows, cell)), grad


def ciou(box1, box2, eps=CIOU_EPS):
    """ultralytics `bbox_iou(box1, box2, xywh=True, CIoU=True)`, elementwise.

    `CIoU = IoU - (rho²/c² + alpha v)`, `v = 4/pi² (atan(w2/h2) -
    atan(w1/h1))²`, `alpha = v / (v - IoU + 1 + eps)` without gradient;
    union and c² carry `+ eps` exactly where ultralytics puts it; heights
    below `MIN_HEIGHT` are raised to it in the aspect term only (ultralytics
    gives NaN for a zero height).
    """
    x1, y1, w1, h1 = tf.unstack(box1, 4, axis=-1)
    x2, y2, w2, h2 = tf.unstack(box2, 4, axis=-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (tf.maximum(tf.minimum(b1x2, b2x2) - tf.maximum(b1x1, b2x1), 0.0)
             * tf.maximum(tf.minimum(b1y2, b2y2) - tf.maximum(b1y1, b2y1),
                          0.0))
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = tf.maximum(b1x2, b2x2) - tf.minimum(b1x1, b2x1)
    ch = tf.maximum(b1y2, b2y2) - tf.minimum(b1y1, b2y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2
            + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4
    # ultralytics divides by the bare height: a predicted height that
    # underflows to 0 (t_h < -50) gives NaN there; the floor keeps ours
    # finite and changes nothing above it.
    v = (4 / math.pi**2) * tf.square(
        tf.atan(w2 / tf.maximum(h2, MIN_HEIGHT))
        - tf.atan(w1 / tf.maximum(h1, MIN_HEIGHT)))
    alpha = tf.stop_gradient(v / (v - iou + (1 + eps)))
    return iou - (rho2 / c2 + v * alpha)


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV5Loss(keras.losses.Loss):
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
    at run time (a `padded_batch` dataset). Eagerly and in graph mode only
    the positive (truth, anchor, cell) slots are gathered, so the cost is
    the read of the predictions, the write of their gradient, and a term
    linear in the real truths, whatever the padding. Under XLA (static
    shapes) all `B M A 5` slots are computed and masked: the padding then
    costs time, so keep `M` tight there. Ground truth goes through
    `keras_yolo.assign.groundtruth.sanitize` (invalid rows raise eagerly,
    are masked when compiled).

    Reduction: `loss(y_true, y_pred) = L_box + L_obj + L_cls`, means over
    positives and cells as above, so it does NOT grow with batch size.
    ComputeLoss returns `(L_box + L_obj + L_cls) * B`; pass
    `scale_by_batch_size=True` for exactly that.

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
        autobalance: update `balance` after every call, as ComputeLoss:
            `balance_l <- 0.9999 balance_l + 0.0001 / L_obj,l`, then divide
            by the stride-16 level's weight. The state lives in the
            non-trainable variable `self.balance_state`.
        scale_by_batch_size: multiply the total by B (ultralytics).

    Example:
        >>> loss = YoloV5Loss(num_classes=80)
        >>> total = loss({"boxes": boxes, "labels": labels}, [p3, p4, p5])
        >>> parts = loss.components({"boxes": boxes, "labels": labels},
        ...                         [p3, p4, p5])   # {"box", "obj", "cls"}
    """

    def __init__(self, num_classes=80, anchors=YOLOV5_ANCHORS,
                 strides=STRIDES, bounding_box_format="rel_center_xywh",
                 box=0.05, obj=1.0, cls=0.5, anchor_t=4.0, balance=None,
                 gr=1.0, label_smoothing=0.0, fl_gamma=0.0, cls_pw=1.0,
                 obj_pw=1.0, sort_obj_iou=False, autobalance=False,
                 scale_by_batch_size=False, name="yolo_v5_loss", **kwargs):
        super().__init__(name=name, **kwargs)
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
        if int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
        box_ops._check_format("bounding_box_format", bounding_box_format)
        for key, value in (("anchor_t", anchor_t), ("cls_pw", cls_pw),
                           ("obj_pw", obj_pw)):
            if not value > 0:
                raise ValueError(f"`{key}` must be > 0; got {value!r}.")
        if not 0.0 <= gr <= 1.0:
            raise ValueError(f"`gr` must be in [0, 1]; got {gr!r}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1); got {label_smoothing!r}.")
        if fl_gamma < 0:
            raise ValueError(f"`fl_gamma` must be >= 0; got {fl_gamma!r}.")
        balance = default_balance(levels) if balance is None else balance
        if len(balance) != levels:
            raise ValueError(
                f"`balance` needs one weight per level ({levels}); got "
                f"{tuple(balance)}.")
        if autobalance and 16 not in tuple(strides):
            raise ValueError(
                "`autobalance` normalises by the stride-16 level; got "
                f"strides={tuple(strides)}.")
        self.num_classes = int(num_classes)
        self.anchors = anchors.tolist()
        self.strides = tuple(int(s) for s in strides)
        self.bounding_box_format = bounding_box_format
        self.box, self.obj, self.cls = float(box), float(obj), float(cls)
        self.anchor_t = float(anchor_t)
        self.balance = tuple(float(b) for b in balance)
        self.gr = float(gr)
        self.label_smoothing = float(label_smoothing)
        self.fl_gamma = float(fl_gamma)
        self.cls_pw, self.obj_pw = float(cls_pw), float(obj_pw)
        self.sort_obj_iou = bool(sort_obj_iou)
        self.autobalance = bool(autobalance)
        self.scale_by_batch_size = bool(scale_by_batch_size)
        # ComputeLoss keeps balance as Python floats (double precision).
        self.balance_state = tf.Variable(
            self.balance, dtype=tf.float64, trainable=False,
            name="yolo_v5_balance")

    # -- the objective --------------------------------------------------
    def _level(self, preds, level, boxes, labels, compact):
        """Box, objectness (unbalanced) and class terms of one level."""
        _, height, width, num_anchors, channels = preds.shape
        if channels != 5 + self.num_classes:
            raise ValueError(
                f"level {level} has {channels} channels per anchor; "
                f"expected 5 + num_classes = {5 + self.num_classes}.")
        if num_anchors != len(self.anchors[level]):
            raise ValueError(
                f"level {level} has {num_anchors} anchors per cell; "
                f"`anchors[{level}]` has {len(self.anchors[level])}.")
        dynamic = tf.shape(preds)
        height = dynamic[1] if height is None else height
        width = dynamic[2] if width is None else width
        # ultralytics stores anchors in cells of the level: pixels / stride.
        anchors = (tf.constant(self.anchors[level], tf.float32)
                   / float(self.strides[level]))
        t = build_targets(boxes, labels, (height, width), anchors,
                          self.anchor_t, compact=compact)
        valid = t["valid"]
        count = tf.reduce_sum(tf.cast(valid, tf.float32))
        safe_count = tf.maximum(count, 1.0)
        rows = tf.reshape(preds, [-1, channels])  # (B H W A, 5 + C)
        if compact:
            obj_logits, picked = _objectness_and_rows(rows, t["cell"])
        else:
            # XLA fuses the gradient of a slice and a gather itself, faster
            # than the explicit in-place scatter.
            obj_logits, picked = rows[:, 4], tf.gather(rows, t["cell"])
            # Double where: masked slots read a harmless zero prediction, so
            # no NaN reaches their (discarded) forward or backward values.
            picked = tf.where(valid[:, None], picked, 0.0)

        pxy = tf.sigmoid(picked[:, 0:2]) * 2.0 - 0.5
        pwh = tf.square(tf.sigmoid(picked[:, 2:4]) * 2.0) * t["anchor_wh"]
        # Masked slots get a harmless unit box (no NaN in any branch).
        tbox = tf.where(valid[:, None], t["box"], [0.5, 0.5, 1.0, 1.0])
        overlap = ciou(tf.concat([pxy, pwh], -1), tbox)
        lbox = tf.reduce_sum(tf.where(valid, 1.0 - overlap, 0.0)) / safe_count

        # Objectness target, "last write wins" as tobj[b, a, gj, gi] = iou.
        score = tf.maximum(tf.stop_gradient(overlap), 0.0)
        score = (1.0 - self.gr) + self.gr * score
        cells = tf.shape(rows)[0:1]
        cell = t["cell"][:, None]
        if self.sort_obj_iou:
            winner = valid
        else:
            order = tf.where(valid, t["order"], -1)
            last = tf.tensor_scatter_nd_max(tf.fill(cells, -1), cell, order)
            winner = valid & (tf.gather(last, t["cell"]) == order)
        tobj = tf.tensor_scatter_nd_max(
            tf.zeros(cells, tf.float32), cell, tf.where(winner, score, 0.0))
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
            lcls = (tf.reduce_sum(tf.where(valid[:, None], bce, 0.0))
                    / (safe_count * self.num_classes))
        return lbox, lobj, lcls

    def components(self, y_true, y_pred):
        """`{"box", "obj", "cls"}`: ComputeLoss's `lbox, lobj, lcls` (gains
        applied, not multiplied by batch size). Updates the autobalance
        state when `autobalance=True`.

        Ground truth goes through `groundtruth.sanitize`: eagerly an invalid
        row raises `GroundTruthError`; in a compiled step it is masked out.
        """
        levels = list(y_pred) if isinstance(y_pred, (list, tuple)) else [
            y_pred]
        if len(levels) != len(self.strides):
            raise ValueError(
                f"`y_pred` must hold {len(self.strides)} levels (strides "
                f"{self.strides}); got {len(levels)}.")
        levels = [tf.cast(p, tf.float32) for p in levels]
        first = tf.shape(levels[0])
        image_shape = (first[1] * self.strides[0], first[2] * self.strides[0])
        boxes, labels = groundtruth.sanitize(
            y_true, self.num_classes, self.bounding_box_format,
            None if self.bounding_box_format.startswith("rel_")
            else image_shape)
        boxes = tf.cast(boxes, tf.float32)
        if self.bounding_box_format != "rel_center_xywh":
            boxes = box_ops.convert(boxes, self.bounding_box_format,
                                    "rel_center_xywh", image_shape)
        compact = not _compiling_with_xla()
        balance = self.balance_state
        lbox = lobj = lcls = tf.zeros([], tf.float32)
        updated = []
        for i, preds in enumerate(levels):
            box_i, obj_i, cls_i = self._level(preds, i, boxes, labels,
                                              compact)
            lbox += box_i
            lcls += cls_i
            lobj += obj_i * tf.cast(balance[i], tf.float32)
            if self.autobalance:
                # ComputeLoss divides by zero (ZeroDivisionError) when a
                # level's objectness loss is exactly 0 (logits of -1e4 and
                # no truth); that level's weight is then left unchanged.
                obj64 = tf.cast(tf.stop_gradient(obj_i), tf.float64)
                usable = (obj64 > 0.0) & tf.math.is_finite(obj64)
                updated.append(tf.where(
                    usable,
                    balance[i] * AUTOBALANCE_MOMENTUM
                    + (1.0 - AUTOBALANCE_MOMENTUM)
                    / tf.where(usable, obj64, 1.0),
                    balance[i]))
        if self.autobalance:
            new = tf.stack(updated)
            self.balance_state.assign(new / new[self.strides.index(16)])
        return {"box": lbox * self.box, "obj": lobj * self.obj,
                "cls": lcls * self.cls}

    def call(self, y_true, y_pred):
        parts = self.components(y_true, y_pred)
        total = parts["box"] + parts["obj"] + parts["cls"]
        if self.scale_by_batch_size:
            levels = y_pred if isinstance(y_pred, (list, tuple)) else [y_pred]
            total = total * tf.cast(tf.shape(levels[0])[0], tf.float32)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, anchors=self.anchors,
            strides=self.strides,
            bounding_box_format=self.bounding_box_format, box=self.box,
            obj=self.obj, cls=self.cls, anchor_t=self.anchor_t,
            balance=self.balance, gr=self.gr,
            label_smoothing=self.label_smoothing, fl_gamma=self.fl_gamma,
            cls_pw=self.cls_pw, obj_pw=self.obj_pw,
            sort_obj_iou=self.sort_obj_iou, autobalance=self.autobalance,
            scale_by_batch_size=self.scale_by_batch_size,
        )
        return config
