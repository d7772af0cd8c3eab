"""The YOLOv1 objective (Redmon et al. 2016) and darknet's `[detection]` layer."""

import keras
import tensorflow as tf

from keras_yolo import checks
from keras_yolo.assign import yolo_v1 as assign
from keras_yolo.cell_grid import ensure_raw_shape, parametrize, split_raw
from keras_yolo.losses.base import YoloLoss

# Darknet's cfg/yolov1.cfg [detection] section, used by darknet_compat=True
# for every darknet argument left at None (coord_scale and noobject_scale
# come from lambda_coord and lambda_noobj, whose defaults are the same 5, .5).
DARKNET_DEFAULTS = dict(object_scale=1.0, class_scale=1.0, rescore=True,
                        sqrt=True, softmax=False)
DARKNET_ARGUMENTS = ("coord_scale", "object_scale", "noobject_scale",
                     "class_scale", "rescore", "sqrt", "softmax")


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV1Loss(YoloLoss):
    """YOLOv1 objective: sum-squared error over the S x S grid.

    With 1^obj_i "an object's centre is in cell i", 1^obj_ij "predictor j of
    cell i is responsible for it", 1^noobj_ij = 1 - 1^obj_ij, and
    `x, y, w, h, C, p` from the parametrisation (seed: all logistic,
    `p = softmax`; see `keras_yolo.layers.YoloV1Decode`), per image

        box   = λ_coord Σ_i Σ_j 1^obj_ij [(x - x̂)² + (y - ŷ)²
                                          + (√w - √ŵ)² + (√h - √ĥ)²]
        obj   = Σ_i Σ_j 1^obj_ij (IOU(pred, truth) - Ĉ)²
        noobj = λ_noobj Σ_i Σ_j 1^noobj_ij (0 - Ĉ)²
        cls   = Σ_i 1^obj_i Σ_c (p_i(c) - p̂_i(c))²

    and the loss is their sum averaged over the batch (divided by B; the
    per-image sums with `reduction="none"`, see `YoloLoss`). The
    IoU target carries no gradient. Units: `x, y` offsets of the centre in
    its cell (cell units), `w, h` fractions of the image. Assignment
    (`keras_yolo.assign.yolo_v1`): one object per cell, the first in
    `y_true`'s order; responsible predictor = highest IoU (lowest index on
    ties), or the nearest box `(x/S, y/S, w, h)` when no IoU is positive.

    `darknet_compat=True` reproduces pjreddie darknet's `[detection]` layer
    (2018, `src/detection_layer.c`): linear parametrisation (darknet reads
    raw outputs), darknet's scales, and half squared errors so that the
    gradient is darknet's delta:

        box   = ½ coord_scale Σ 1^obj_ij [(x - t_x)² + (y - t_y)²
                                          + (t_w - √ŵ)² + (t_h - √ĥ)²]
                (w, h instead of their roots when sqrt=False)
        obj   = ½ object_scale Σ 1^obj_ij (target - t_o)²,
                target = IOU (no gradient) if rescore else 1
        noobj = ½ noobject_scale Σ 1^noobj_ij t_o²
        cls   = ½ class_scale Σ 1^obj_i Σ_c (p(c) - c_c)²           (softmax=False)
              = class_scale Σ 1^obj_i (logsumexp(c) - Σ_c p(c) c_c)  (softmax=True:
                darknet's delta p - softmax(c) is this term's gradient)

    Precisely: with `raw` the `(B, S, S, Bx*5 + C)` output and
    `to_darknet_layout` darknet's order,
    `-B * ∂L/∂raw == darknet's l.delta` (the loss is divided by the batch
    size B, darknet divides its learning rate by the batch instead).

    Args:
        num_classes: C.
        grid_size: S (7 in the paper).
        boxes_per_cell: the seed's B, boxes predicted per cell (2 in the
            paper, 3 in darknet's yolov1.cfg).
        lambda_coord: λ_coord, weight of the box term.
        lambda_noobj: λ_noobj, weight of confidences of non-responsible boxes.
        bounding_box_format: format of `y_true["boxes"]`.
        image_shape: `(height, width)` of the input image, needed only for a
            pixel `bounding_box_format`.
        parametrization: `"logistic"` (seed; default) or `"linear"`
            (darknet's; the seed's loss on raw `x, y, C, p` and `√w = t_w`).
            darknet_compat implies `"linear"`.
        darknet_compat: reproduce darknet's layer (formulas above).
        coord_scale, object_scale, noobject_scale, class_scale, rescore,
            sqrt, softmax: darknet's `[detection]` options, only with
            `darknet_compat=True`; `None` takes `cfg/yolov1.cfg`'s values
            (`coord_scale = lambda_coord`, `noobject_scale = lambda_noobj`,
            object and class scale 1, rescore and sqrt on, softmax off).
        reduction: of the per-image sums, as `YoloLoss` documents (default
            their mean over the batch, the formula above).

    Call:
        `y_true = {"boxes": (B, M, 4), "labels": (B, M)}` padded with label
        -1; `y_pred` the raw `(B, S, S, Bx*5 + C)` output (or a list of
        it), any float dtype; optional `sample_weight` per image. B and M
        may be unknown when the step is traced (`padded_batch`).
        Returns a float32 scalar; `components()` gives `"box"`, `"obj"`,
        `"noobj"`, `"cls"`, which sum to it. Ground truth goes through
        `keras_yolo.assign.groundtruth.sanitize`: an invalid row (label
        `>= num_classes`, NaN coordinate, size `<= 0`, box outside the image)
        raises `GroundTruthError` eagerly and is masked out (as padding)
        inside a compiled step.

    Finiteness: the logistic parametrisation is bounded. The linear one
    (darknet's) is a plain squared error of raw values: finite while the
    summed squares fit float32 (measured: |raw| up to 1e18 on a 5 x 5 grid,
    about 1e17 on darknet's 7 x 7), gradients proportional to the raw values;
    darknet's float sums overflow at the same point.

    Example:
        >>> loss = YoloV1Loss(num_classes=20, grid_size=7, boxes_per_cell=2)
        >>> loss({"boxes": boxes, "labels": labels}, model(images))
    """

    def __init__(self, num_classes, grid_size=7, boxes_per_cell=2,
                 lambda_coord=5.0, lambda_noobj=0.5,
                 bounding_box_format="rel_center_xywh", image_shape=None,
                 parametrization=None, darknet_compat=False,
                 coord_scale=None, object_scale=None, noobject_scale=None,
                 class_scale=None, rescore=None, sqrt=None, softmax=None,
                 reduction="sum_over_batch_size", name="yolo_v1_loss",
                 dtype=None):
        super().__init__(num_classes, bounding_box_format,
                         reduction=reduction, name=name, dtype=dtype)
        checks.check_positive_int("grid_size", grid_size)
        checks.check_positive_int("boxes_per_cell", boxes_per_cell)
        checks.check_non_negative(lambda_coord=lambda_coord,
                           lambda_noobj=lambda_noobj)
        checks.check_image_shape(bounding_box_format, image_shape)
        darknet = dict(coord_scale=coord_scale, object_scale=object_scale,
                       noobject_scale=noobject_scale, class_scale=class_scale,
                       rescore=rescore, sqrt=sqrt, softmax=softmax)
        if not darknet_compat:
            given = [k for k, v in darknet.items() if v is not None]
            if given:
                raise ValueError(
                    f"{given} are darknet's [detection] options: pass "
                    "darknet_compat=True to use them (the seed's objective "
                    "takes lambda_coord and lambda_noobj).")
        if parametrization is None:
            parametrization = "linear" if darknet_compat else "logistic"
        if parametrization not in ("logistic", "linear"):
            raise ValueError("`parametrization` must be 'logistic' or "
                             f"'linear'; got {parametrization!r}.")
        if darknet_compat and parametrization != "linear":
            raise ValueError(
                "darknet_compat=True reads raw outputs as darknet does: "
                f"parametrization must be 'linear'; got {parametrization!r}.")
        self.grid_size = grid_size
        self.boxes_per_cell = boxes_per_cell
        self.lambda_coord = float(lambda_coord)
        self.lambda_noobj = float(lambda_noobj)
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.parametrization = parametrization
        self.darknet_compat = bool(darknet_compat)
        for k, v in darknet.items():
            setattr(self, k, v)
        # Effective darknet options (config keeps what the user passed).
        resolved = dict(DARKNET_DEFAULTS, coord_scale=self.lambda_coord,
                        noobject_scale=self.lambda_noobj)
        resolved.update({k: v for k, v in darknet.items() if v is not None})
        self._darknet = resolved

    def check_levels(self, y_pred):
        """The one `(B, S, S, Bx*5 + C)` output (a tensor or a list of it);
        an unknown grid or depth is checked at run time."""
        s, n, c = self.grid_size, self.boxes_per_cell, self.num_classes
        if isinstance(y_pred, (list, tuple)):
            if len(y_pred) != 1:
                raise ValueError("YoloV1Loss takes one y_pred output; got a "
                                 f"list of {len(y_pred)}.")
            y_pred = y_pred[0]
        y_pred = tf.convert_to_tensor(y_pred)
        y_pred = ensure_raw_shape(y_pred, s, n, c, "YoloV1Loss")
        if y_pred.shape.rank != 4 or tuple(y_pred.shape[1:]) != (s, s, n * 5 + c):
            raise ValueError(
                f"YoloV1Loss(grid_size={s}, boxes_per_cell={n}, num_classes="
                f"{c}) expects y_pred of shape (batch, {s}, {s}, {n * 5 + c}); "
                f"got {tuple(y_pred.shape)}.")
        return [tf.cast(y_pred, tf.float32)]

    def input_image_shape(self, levels):
        return self.image_shape

    def logged_terms(self, terms):
        """`box`, `obj` (with `noobj`), `cls`: the names every version logs."""
        return {"box": terms["box"], "obj": terms["obj"] + terms["noobj"],
                "cls": terms["cls"]}

    def terms(self, truth, levels):
        """Per-image `"box"`, `"obj"`, `"noobj"`, `"cls"`, each `(B,)`."""
        s, n, c = self.grid_size, self.boxes_per_cell, self.num_classes
        y_pred = levels[0]
        compat = self.darknet_compat
        opts = self._darknet
        sqrt = opts["sqrt"] if compat else None
        softmax = opts["softmax"] if compat else None
        pred = parametrize(y_pred, n, c, self.parametrization, sqrt, softmax)

        target = assign.cell_targets(truth.boxes, truth.labels, s, c)
        obj_cell = target["object_mask"]                          # (B, S, S)
        t_box = target["boxes"]                                   # (B, S, S, 4)

        pred_boxes = tf.concat([pred["xy"], pred["wh"]], axis=-1)
        responsible, iou = assign.responsible_predictor(
            tf.stop_gradient(pred_boxes), t_box, s)
        obj = responsible * obj_cell[..., None]                   # 1^obj_ij
        noobj = 1.0 - obj                                         # 1^noobj_ij
        iou = tf.stop_gradient(iou)

        use_sqrt = sqrt is not False
        # Empty cells hold size 0; real rows are > 0 after sanitize.
        t_size = (tf.sqrt(tf.maximum(t_box[..., 2:], 0.0)) if use_sqrt
                  else t_box[..., 2:])
        coord_err = (
            tf.reduce_sum(tf.square(pred["xy"] - t_box[..., None, :2]), -1)
            + tf.reduce_sum(tf.square(pred["sqrt_wh"] - t_size[..., None, :]),
                            -1))
        conf = pred["confidence"]
        conf_target = iou if (not compat or opts["rescore"]) else 1.0

        def per_image(x):
            return tf.reduce_sum(x, axis=list(range(1, x.shape.rank)))

        if not compat:
            return {
                "box": self.lambda_coord * per_image(obj * coord_err),
                "obj": per_image(obj * tf.square(conf_target - conf)),
                "noobj": self.lambda_noobj * per_image(noobj * tf.square(conf)),
                "cls": per_image(obj_cell[..., None] * tf.square(
                    target["classes"] - pred["class_probs"])),
            }
        half = 0.5  # darknet's delta = scale * (t - y) is -d/dy of ½ scale (t - y)²
        if softmax:
            _, logits = split_raw(y_pred, n, c)
            cls = opts["class_scale"] * (
                tf.reduce_logsumexp(logits, -1)
                - tf.reduce_sum(target["classes"] * logits, -1))
        else:
            cls = half * opts["class_scale"] * tf.reduce_sum(
                tf.square(target["classes"] - pred["class_probs"]), -1)
        return {
            "box": half * opts["coord_scale"] * per_image(obj * coord_err),
            "obj": half * opts["object_scale"] * per_image(
                obj * tf.square(conf_target - conf)),
            "noobj": half * opts["noobject_scale"] * per_image(
                noobj * tf.square(conf)),
            "cls": per_image(obj_cell * cls),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            grid_size=self.grid_size, boxes_per_cell=self.boxes_per_cell,
            lambda_coord=self.lambda_coord, lambda_noobj=self.lambda_noobj,
            image_shape=self.image_shape,
            parametrization=self.parametrization,
            darknet_compat=self.darknet_compat,
            **{k: getattr(self, k) for k in DARKNET_ARGUMENTS})
        return config
