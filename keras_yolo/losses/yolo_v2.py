"""YOLOv2 objective: the seed's formula, and darknet's `[region]` layer."""

import keras
import numpy as np
import tensorflow as tf

from keras_yolo import anchors as default_anchors
from keras_yolo import boxes as box_ops
from keras_yolo import grid
from keras_yolo.assign import matching
from keras_yolo.assign import yolo_v2 as assign_v2
from keras_yolo.checks import check_non_negative, check_unit_interval
from keras_yolo.losses.base import YoloLoss, dim

# darknet region_layer.c: while fewer than 12800 images have been seen, every
# predicted box is pulled towards its anchor centred in its cell, with a
# delta scale of .01.
DARKNET_PRIOR_IMAGES = 12800
DARKNET_PRIOR_SCALE = 0.01
# Smallest truth size (grid cells) whose log is taken: a zero-size truth
# (which darknet's loader never produces) gives a finite loss, not log 0.
MIN_TRUTH_CELLS = 1e-6
# The seed's size error (w - p e^t)² is exact while the predicted size is at
# most this many grid cells (or twice its truth); beyond, it continues along
# its tangent, so loss and gradient stay finite for any t (the formula itself
# reaches inf at t ≈ 44 in its gradient, 88 in its value).
MAX_PREDICTED_CELLS = 64.0


def _size_error(t, truth, anchor):
    """`(truth - anchor e^t)²`, continued linearly (C¹) beyond the size
    `max(MAX_PREDICTED_CELLS, 2 truth)`, where its slope is positive: a huge
    `t` is pulled down with a bounded gradient instead of an overflowing one."""
    limit = tf.math.log(tf.maximum(MAX_PREDICTED_CELLS, 2.0 * truth) / anchor)
    t_in = tf.minimum(t, limit)
    predicted = anchor * tf.exp(t_in)
    error = truth - predicted
    slope = -2.0 * error * predicted  # d/dt of the square at t_in
    return tf.square(error) + tf.stop_gradient(slope) * (t - t_in)


def _darknet_iou(boxes1, boxes2):
    """darknet's `box_iou` of broadcastable `rel_center_xywh` boxes."""
    return box_ops.iou(boxes1, boxes2, "rel_center_xywh", "iou",
                       convention="darknet")


def _masked_sum(mask, values):
    """Per image `(B,)`: Σ mask * values over the `(B, H, W, A)` grid,
    without letting inf/NaN of masked-out slots through."""
    return tf.reduce_sum(tf.where(mask > 0, mask * values, 0.0), [1, 2, 3])


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV2Loss(YoloLoss):
    """YOLOv2 objective (Redmon & Farhadi 2017, "YOLO9000").

    Default (the seed's formula), summed over cells i and anchors j:

        L = λ_coord Σ 1obj_ij (2 - w_ij h_ij) [(x_ij - x̂_ij)² + (y_ij - ŷ_ij)²
                                            + (w_ij - ŵ_ij)² + (h_ij - ĥ_ij)²]
          + λ_obj   Σ 1obj_ij   (IOU^truth_pred - Ĉ_ij)²
          + λ_noobj Σ 1noobj_ij (0 - Ĉ_ij)²
          + λ_class Σ 1obj_ij Σ_c (p_i(c) - p̂_i(c))²

    How each symbol is read (hat = prediction, no hat = truth, as in the
    seed's `(IOU - Ĉ)²` and `(0 - Ĉ)²`):

    * x̂ = logistic(t_x) + c_x, ŷ = logistic(t_y) + c_y, ŵ = p_w e^{t_w},
      ĥ = p_h e^{t_h}, all in grid cells (the unit of c_x), so p_w, p_h are
      the anchor in cells (pixels / stride, darknet's `biases`); x, y, w, h
      are the truth's centre and size in the same grid cells.
    * In the weight (2 - w h), w and h are the truth's size as fractions of
      the image (darknet's `2 - truth.w*truth.h`): it lies in [1, 2] and
      favours small boxes.
    * Ĉ = logistic(t_o); p̂(c) = softmax(c)_c; p(c) is the one-hot truth.
    * 1obj_ij = 1 for the anchor j, in the cell i holding the truth's centre,
      whose shape (centred on the truth) has the highest IoU with the truth
      (`1obj = max(IOU^truth_anchor)`). Two truths on one cell and anchor:
      the later row of `y_true` wins (as darknet). A centre at exactly 1.0
      belongs to the last cell (darknet would index past its grid).
    * IOU^truth_pred: plain IoU of the decoded predicted box and its truth,
      a constant target (no gradient), as darknet's `rescore`.
    * 1noobj = 1 - 1obj. `ignore_thresh` (not in the seed; darknet's
      `thresh=.6`) additionally exempts predictions whose best IoU with any
      truth of the image exceeds it.

    `darknet_compat=True` reproduces pjreddie darknet's `[region]` layer
    (`src/region_layer.c`, 2018, `softmax=1`, `coords=4`) instead; its
    arguments replace the λs. Per image:

        box   = Σ 1obj ½ s (2 - w h) [(t̃_x - σ(t_x))² + (t̃_y - σ(t_y))²
                                     + (t̃_w - t_w)² + (t̃_h - t_h)²]
                + [seen < 12800] Σ (1 - 1obj) ½ .01 [(½ - σ(t_x))² + (½ - σ(t_y))²
                                                      + t_w² + t_h²]
        obj   = Σ 1obj ½ object_scale (T - Ĉ)²,  T = IOU^truth_pred if rescore else 1
        noobj = Σ (1 - 1obj) [best IoU with any truth <= thresh] ½ noobject_scale Ĉ²
        cls   = Σ 1obj class_scale (-Σ_c p(c) log p̂(c))

    with s = `coord_scale`, t̃_x = x W - c_x (offset in the cell),
    t̃_w = log(w W / p_w), and `bias_match=False` choosing the responsible
    anchor by the predicted box shape instead of the anchor shape. Then,
    exactly, for every raw output r of image b:

        -B dL/dr = delta(r) * σ'(r) for x, y and objectness
        -B dL/dr = delta(r)         for w, h and the class scores

    where `delta` is the layer's `l.delta`. The σ' factor is what darknet's
    GPU build applies (`backward_region_layer_gpu` runs `gradient_array`
    LOGISTIC on x, y and objectness); the CPU `backward_region_layer` is
    empty (commented out), so a CPU build never back-propagates this layer:
    a darknet quirk we do not copy. The factor B is the reduction below;
    darknet divides the summed delta by the batch in its update
    (`learning_rate / batch`), so the same learning rate gives the same step.
    darknet's truth list is also reproduced: at most 30 truths per image, a
    truth whose centre x is exactly 0 ends the list.

    The prior term needs how many images darknet has seen (it adds the batch
    size to `net.seen` before the forward pass). `seen` is a non-trainable
    variable of this loss: each call `loss(y_true, y_pred)` (with
    `darknet_compat=True`) computes with the count plus the batch size and
    adds the batch size to it, so it works inside `model.fit` (also under
    `jit_compile`). Every call counts, evaluation included; `components()`
    gives the terms of that computation without counting. `count_seen=False`
    freezes it (then set `loss.seen.assign(n)` yourself), `prior_images=0`
    disables the term. Under a distribution strategy the count is per
    replica.

    Reduction: each term is summed over the image's cells and anchors; the
    default averages these per-image sums over the batch (divided by B);
    `reduction="sum"` gives darknet's per-batch sum, `"none"` the per-image
    sums, and `sample_weight` weights images (see `YoloLoss`).

    Sizes: the batch size, the number of truths M and the grid may all be
    unknown when the step is traced (a `padded_batch` pipeline); static sizes
    are used where known. Ground truth goes through
    `keras_yolo.assign.groundtruth.sanitize`: an invalid row (label
    `>= num_classes`, NaN coordinate, size `<= 0`, box outside the image)
    raises `GroundTruthError` eagerly and is masked out (as padding) inside a
    compiled step.

    Finiteness, for any finite raw output: `e^t` is only ever taken of
    `t_w, t_h` clipped to `±MAX_LOG_SCALE` (20) for the decoded boxes and
    IoUs, and the seed's size error `(w - p e^t)²` is exact while
    `p e^t <= max(MAX_PREDICTED_CELLS, 2 w)` (64 grid cells) and continues
    along its tangent beyond, so a huge `t` is pulled down with a bounded
    gradient. The seed's formula as written, and darknet, overflow there
    (darknet's `exp` at `t ≈ 88`; NaN IoUs from `inf * 0` areas): on that
    range ours is finite and the references are not.

    Args:
        num_classes: C.
        anchors: `(1, A, 2)` anchor `(w, h)` in input pixels. Default
            `keras_yolo.anchors.YOLOV2_COCO_ANCHORS` (darknet `yolov2.cfg`,
            smallest 18 px; `YOLOV2_VOC_ANCHORS`, smallest 42 px, suit
            VOC's larger objects).
        strides: `(stride,)`, default `(32,)`. The input image is taken to be
            grid size * stride pixels.
        lambda_coord, lambda_obj, lambda_noobj, lambda_class: the seed's
            weights; defaults 1, 5, 1, 1 are `yolov2-voc.cfg`'s
            `coord_scale`, `object_scale`, `noobject_scale`, `class_scale`.
        ignore_thresh: optional IoU above which a prediction gets no noobj
            loss (default None: the seed's 1noobj = 1 - 1obj).
        bounding_box_format: format of `y_true["boxes"]`.
        darknet_compat: use darknet's `[region]` layer instead of the seed.
        coord_scale, object_scale, noobject_scale, class_scale, thresh,
            rescore, bias_match: darknet's `[region]` options, defaults of
            `cfg/yolov2.cfg` / `yolov2-voc.cfg`.
        prior_images: the prior term applies while `seen < prior_images`.
        prior_scale: its delta scale (darknet: .01).
        seen: initial count of images seen.
        count_seen: add the batch size to `seen` at each call.
        reduction: of the per-image sums, see `YoloLoss`.

    Example:
        >>> loss = YoloV2Loss(num_classes=20, anchors=YOLOV2_VOC_ANCHORS)
        >>> y_true = {"boxes": boxes, "labels": labels}   # rel_center_xywh
        >>> total = loss(y_true, model(images))            # (B, 13, 13, 5, 25)
        >>> loss.components(y_true, model(images))         # box, obj, noobj, cls
    """

    def __init__(self, num_classes, anchors=None, strides=(32,),
                 lambda_coord=1.0, lambda_obj=5.0, lambda_noobj=1.0,
                 lambda_class=1.0, ignore_thresh=None,
                 bounding_box_format="rel_center_xywh", darknet_compat=False,
                 coord_scale=1.0, object_scale=5.0, noobject_scale=1.0,
                 class_scale=1.0, thresh=0.6, rescore=True, bias_match=True,
                 prior_images=DARKNET_PRIOR_IMAGES,
                 prior_scale=DARKNET_PRIOR_SCALE, seen=0, count_seen=True,
                 reduction="sum_over_batch_size", name="yolo_v2_loss",
                 dtype=None):
        super().__init__(num_classes, bounding_box_format,
                         reduction=reduction, name=name, dtype=dtype)
        if anchors is None:
            anchors = default_anchors.YOLOV2_COCO_ANCHORS
        anchors, stride = grid.single_level_anchors(anchors, strides)
        check_non_negative(
            lambda_coord=lambda_coord, lambda_obj=lambda_obj,
            lambda_noobj=lambda_noobj, lambda_class=lambda_class,
            coord_scale=coord_scale, object_scale=object_scale,
            noobject_scale=noobject_scale, class_scale=class_scale,
            prior_scale=prior_scale, seen=seen, prior_images=prior_images)
        if ignore_thresh is not None:
            check_unit_interval(ignore_thresh=ignore_thresh)
        self.anchors = [anchors]
        self.strides = (stride,)
        self.lambda_coord = float(lambda_coord)
        self.lambda_obj = float(lambda_obj)
        self.lambda_noobj = float(lambda_noobj)
        self.lambda_class = float(lambda_class)
        self.ignore_thresh = None if ignore_thresh is None else float(ignore_thresh)
        self.darknet_compat = bool(darknet_compat)
        self.coord_scale = float(coord_scale)
        self.object_scale = float(object_scale)
        self.noobject_scale = float(noobject_scale)
        self.class_scale = float(class_scale)
        self.thresh = float(thresh)
        self.rescore = bool(rescore)
        self.bias_match = bool(bias_match)
        self.prior_images = int(prior_images)
        self.prior_scale = float(prior_scale)
        self.count_seen = bool(count_seen)
        self.seen = keras.Variable(int(seen), dtype="int64", trainable=False,
                                   name="seen",
                                   aggregation="only_first_replica")
        self._anchors_cells = np.asarray(anchors, np.float32) / stride

    # -- YoloLoss hooks ------------------------------------------------------
    def _counting(self):
        return self.darknet_compat and self.count_seen

    def logged_terms(self, terms):
        """`box`, `obj` (with `noobj`), `cls`: the names every version logs."""
        return {"box": terms["box"], "obj": terms["obj"] + terms["noobj"],
                "cls": terms["cls"]}

    def terms(self, truth, levels):
        """Per-image `{"box", "obj", "noobj", "cls"}`, each `(B,)`.

        The prior term reads `seen` plus the batch size when counting (the
        count `loss(...)` leaves behind), else `seen`.
        """
        raw = levels[0]
        grid_shape = (dim(raw, 1), dim(raw, 2))
        # Anchors in grid cells with stride 1: boxes in fractions of the grid.
        decoded = grid.decode_level(raw, self._anchors_cells, 1,
                                    class_activation="softmax")
        pred_rel = decoded["boxes"]
        objectness, class_probs = decoded["objectness"], decoded["class_probs"]
        predicted_wh = grid.box_sizes(raw[..., 2:4], self._anchors_cells)
        targets = assign_v2.assign(
            truth.boxes, truth.labels, self._anchors_cells, grid_shape,
            self.strides[0], "rel_center_xywh",
            bias_match=self.bias_match or not self.darknet_compat,
            predicted_wh=tf.stop_gradient(predicted_wh),
            darknet_truth_list=self.darknet_compat)
        batch = tf.shape(raw)[0]
        seen = tf.convert_to_tensor(self.seen)
        if self._counting():
            seen = seen + tf.cast(batch, tf.int64)
        return (self._darknet_terms if self.darknet_compat
                else self._seed_terms)(raw, pred_rel, objectness, class_probs,
                                       targets, grid_shape, seen), batch

    def advance_state(self, truth, levels, aux):
        if self._counting():
            self.seen.assign_add(tf.cast(aux, tf.int64))

    def check_levels(self, y_pred):
        """`[raw]`, the one `(B, H, W, A, 5 + C)` level (a tensor or a list
        of it), float32; unknown anchor or channel sizes are checked at run
        time."""
        if isinstance(y_pred, (list, tuple)):
            if len(y_pred) != 1:
                raise ValueError(
                    f"YoloV2Loss takes one level; got a list of {len(y_pred)}.")
            y_pred = y_pred[0]
        raw = tf.cast(y_pred, tf.float32)
        if raw.shape.rank != 5:
            raise ValueError(
                f"y_pred must be (B, H, W, A, 5 + C); got shape {raw.shape}.")
        num_anchors, depth = len(self.anchors[0]), 5 + self.num_classes
        if raw.shape[3] is None or raw.shape[4] is None:
            raw = tf.ensure_shape(raw, [None, None, None, num_anchors, depth])
        if raw.shape[3] != num_anchors or raw.shape[4] != depth:
            raise ValueError(
                f"y_pred must be (B, H, W, {num_anchors}, {depth}) for "
                f"{num_anchors} anchors and num_classes={self.num_classes}; "
                f"got shape {raw.shape}.")
        return [raw]

    # -- the two objectives ----------------------------------------------------
    def _truth_in_cells(self, truth, grid_shape):
        """Truth centre offsets in its cell and size in grid cells."""
        height, width = (tf.cast(n, tf.float32) for n in grid_shape)
        cols = tf.range(width, dtype=tf.float32)[None, None, :, None]
        rows = tf.range(height, dtype=tf.float32)[None, :, None, None]
        offset_x = truth[..., 0] * width - cols
        offset_y = truth[..., 1] * height - rows
        return offset_x, offset_y, truth[..., 2] * width, truth[..., 3] * height

    def _seed_terms(self, raw, pred_rel, objectness, class_probs, targets,
                    grid_shape, seen):
        resp = targets["responsible"]
        truth = targets["truth"]
        x, y, w, h = self._truth_in_cells(truth, grid_shape)
        # t_w, t_h only where a truth is assigned: no overflow elsewhere.
        t_wh = tf.where(resp[..., None] > 0, raw[..., 2:4], 0.0)
        anchors = tf.constant(self._anchors_cells)
        offset = tf.sigmoid(raw[..., 0:2])
        weight = 2.0 - truth[..., 2] * truth[..., 3]
        squared = (tf.square(x - offset[..., 0]) + tf.square(y - offset[..., 1])
                   + _size_error(t_wh[..., 0], w, anchors[:, 0])
                   + _size_error(t_wh[..., 1], h, anchors[:, 1]))
        iou = tf.stop_gradient(_darknet_iou(pred_rel, truth))
        noobj_mask = 1.0 - resp
        if self.ignore_thresh is not None:
            best = self._best_iou(pred_rel, targets)
            noobj_mask *= tf.cast(best <= self.ignore_thresh, tf.float32)
        one_hot = tf.one_hot(targets["label"], self.num_classes)
        return {
            "box": self.lambda_coord * _masked_sum(resp, weight * squared),
            "obj": self.lambda_obj * _masked_sum(resp,
                                                 tf.square(iou - objectness)),
            "noobj": self.lambda_noobj * _masked_sum(noobj_mask,
                                                     tf.square(objectness)),
            "cls": self.lambda_class * _masked_sum(
                resp, tf.reduce_sum(tf.square(one_hot - class_probs), -1)),
        }

    def _darknet_terms(self, raw, pred_rel, objectness, class_probs, targets,
                       grid_shape, seen):
        resp = targets["responsible"]
        truth = targets["truth"]
        x, y, w, h = self._truth_in_cells(truth, grid_shape)
        has_truth = resp[..., None] > 0
        # log(w W / p_w) only where a truth is assigned (log 0 elsewhere).
        size = tf.where(has_truth, tf.maximum(tf.stack([w, h], -1),
                                              MIN_TRUTH_CELLS),
                        self._anchors_cells)
        t_target = tf.math.log(size / self._anchors_cells)
        offset = tf.sigmoid(raw[..., 0:2])
        scale = self.coord_scale * (2.0 - truth[..., 2] * truth[..., 3])
        squared = (tf.square(x - offset[..., 0]) + tf.square(y - offset[..., 1])
                   + tf.reduce_sum(tf.square(t_target - raw[..., 2:4]), -1))
        box = _masked_sum(resp, 0.5 * scale * squared)
        prior_on = tf.cast(seen < self.prior_images, tf.float32)
        prior = (tf.reduce_sum(tf.square(0.5 - offset), -1)
                 + tf.reduce_sum(tf.square(raw[..., 2:4]), -1))
        box += prior_on * _masked_sum(1.0 - resp,
                                      0.5 * self.prior_scale * prior)
        iou = tf.stop_gradient(_darknet_iou(pred_rel, truth))
        target = iou if self.rescore else tf.ones_like(iou)
        best = self._best_iou(pred_rel, targets)
        noobj_mask = (1.0 - resp) * tf.cast(best <= self.thresh, tf.float32)
        log_probs = tf.nn.log_softmax(raw[..., 5:], axis=-1)
        one_hot = tf.one_hot(targets["label"], self.num_classes)
        return {
            "box": box,
            "obj": _masked_sum(resp, 0.5 * self.object_scale
                               * tf.square(target - objectness)),
            "noobj": _masked_sum(noobj_mask, 0.5 * self.noobject_scale
                                 * tf.square(objectness)),
            "cls": _masked_sum(resp, -self.class_scale
                               * tf.reduce_sum(one_hot * log_probs, -1)),
        }

    def _best_iou(self, pred_rel, targets):
        shape = tf.shape(pred_rel)
        flat = tf.reshape(tf.stop_gradient(pred_rel), (shape[0], -1, 4))
        best, _ = matching.best_truth_iou(flat, targets["rel"],
                                          targets["valid"])
        return tf.reshape(best, shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            anchors=self.anchors, strides=list(self.strides),
            lambda_coord=self.lambda_coord, lambda_obj=self.lambda_obj,
            lambda_noobj=self.lambda_noobj, lambda_class=self.lambda_class,
            ignore_thresh=self.ignore_thresh,
            darknet_compat=self.darknet_compat, coord_scale=self.coord_scale,
            object_scale=self.object_scale, noobject_scale=self.noobject_scale, class_scale=self.class_scale,
            thresh=self.thresh, rescore=self.rescore,
            bias_match=self.bias_match, prior_images=self.prior_images,
            prior_scale=self.prior_scale, seen=int(self.seen.numpy()),
            count_seen=self.count_seen)
        return config
