"""`YoloLoss`: the one contract every YOLO objective follows.

A version's loss is a subclass that defines only its own parts:

- `terms(truth, levels)`: the loss terms from prepared ground truth and the
  checked raw outputs. Pure (no state change). With `per_image = True`
  (default) each term is a `(B,)` tensor of per-image values; with
  `per_image = False` (a reference that normalises over the whole batch,
  e.g. ultralytics' mean over the batch's positives) each term is a scalar,
  already normalised as the reference does. It may return `(terms, aux)`;
  `aux` is handed to `advance_state`.
- `check_levels(y_pred)` (optional): validates the raw outputs, returns
  them as a list of float32 tensors. The default checks the level count
  against `strides` and each anchor-grid level's static `(A_l, 5 + C)`
  axes (`level_anchor_counts()`, read from `self.anchors`).
- `input_image_shape(levels)` (optional): `(height, width)` of the input
  image, for pixel box formats. Default: level 0's grid times `strides[0]`.
- `advance_state(truth, levels, aux)` (optional): assigns the loss's state
  variables (`keras.Variable`s, serialized in `get_config`). Called once per
  `loss(...)` / `compute_terms(...)`, after the terms, never by
  `components()`.
- `term_names` / `logged_terms(terms)` (optional): the terms `YoloModel`
  logs (default `box`, `obj`, `cls`).

The base owns everything else, written once: argument validation
(`num_classes`, `bounding_box_format`, `reduction`), ground truth (the
policy of `keras_yolo.assign.groundtruth`: invalid rows raise eagerly and
are masked inside a compiled step; conversion to `rel_center_xywh`; padding
mask), the reduction, `sample_weight`, and the call that sums the terms.

Reduction, per image `i` with loss `L_i = sum of its terms` and weight
`w_i` (`sample_weight`: None, a scalar, `(B,)` or `(B, 1)`):

    "sum_over_batch_size", "mean"   sum_i w_i L_i / B     (default)
    "sum"                           sum_i w_i L_i
    "none" (or None)                w_i L_i, shape (B,)
    "mean_with_sample_weight"       sum_i w_i L_i / sum_i w_i

A batch-level loss (`per_image = False`) has no per-image values: it takes
the first two (`"sum"` = B times the default) and a scalar `sample_weight`,
and refuses the others with a ValueError naming the argument. Unlike
Keras' built-in losses the value is not divided by the number of replicas
of a distribution strategy; `YoloModel` does that.

Which kind each version is, and why (the default always reproduces the
reference's normalisation):

    v1, v2, v3, v4   per image    darknet and the seeds sum each image's
                                  cells; the batch mean is the default
    v5, v8           batch-level  ultralytics divides by the batch's
                                  positives (v5 also averages objectness
                                  over all cells of the batch): per-image
                                  totals would change those divisors

Example:
    >>> class MyLoss(YoloLoss):
    ...     def terms(self, truth, levels):
    ...         obj = tf.reduce_sum(tf.nn.softplus(levels[0][..., 4]),
    ...                             axis=[1, 2, 3])           # (B,)
    ...         return {"box": 0.0 * obj, "obj": obj, "cls": 0.0 * obj}
    >>> loss = MyLoss(num_classes=3)
    >>> total, terms = loss.compute_terms(y_true, y_pred)
"""

import numbers
from typing import NamedTuple

import keras
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo import checks
from keras_yolo.assign import groundtruth

PER_IMAGE_REDUCTIONS = ("none", "mean_with_sample_weight")
REDUCTIONS = ("sum_over_batch_size", "mean", "sum") + PER_IMAGE_REDUCTIONS
# Format every loss works in after ground-truth preparation.
TRUTH_FORMAT = "rel_center_xywh"
# B, H, W and the box count M may be unknown until run time; these may not.
STATIC_AXES_HINT = (
    " Only the anchor and channel axes must be static (B, H, W and the box "
    "count may be None): give the head's reshape, or the tf.function "
    "input_signature, those two sizes.")


class GroundTruth(NamedTuple):
    """Ground truth after the policy, as every `terms` receives it.

    Attributes:
        boxes: `(B, M, 4)` float32 `rel_center_xywh`; 0 on padding and on
            masked invalid rows.
        labels: `(B, M)` int32; -1 on padding and masked invalid rows.
        valid: `(B, M)` bool, `labels >= 0`.
        image_shape: `(height, width)` of the input image (ints, or scalar
            tensors when unknown until run time), or None.
        invalid_count: float32 scalar, the invalid rows masked in this batch
            (always 0 eagerly: there they raise).
    """
    boxes: tf.Tensor
    labels: tf.Tensor
    valid: tf.Tensor
    image_shape: object
    invalid_count: tf.Tensor


def dim(x, axis):
    """`x.shape[axis]` as a Python int when static, else a scalar tensor."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloLoss(keras.losses.Loss):
    """Base of the YOLO objectives (see the module docstring).

    Args:
        num_classes: C, a positive integer.
        bounding_box_format: format of `y_true["boxes"]`, a Keras 3 format
            (`keras_yolo.boxes.FORMATS`).
        reduction: one of `REDUCTIONS` (`None` is `"none"`); see the module
            docstring. Batch-level losses refuse the per-image ones.
        name: name of the loss.
        dtype: dtype of the returned values (computations are float32).

    Call:
        `loss(y_true, y_pred, sample_weight=None)` with
        `y_true = {"boxes": (B, M, 4), "labels": (B, M)}` (label -1 pads;
        B and M may be unknown until run time) and `y_pred` the raw outputs
        (a tensor or a list of levels). Returns a scalar, or `(B,)` with
        `reduction="none"`. Advances the loss's state once.

    Example:
        >>> loss = YoloV3Loss(num_classes=80)
        >>> total, terms = loss.compute_terms(y_true, y_pred)
        >>> float(total) == float(sum(terms.values()))
        True
    """

    # True: `terms` gives per-image values (B,); False: batch-level scalars.
    per_image = True
    # What `YoloModel` logs (epoch means), from `logged_terms`.
    term_names = ("box", "obj", "cls")

    def __init__(self, num_classes, bounding_box_format="rel_center_xywh",
                 reduction="sum_over_batch_size", name=None, dtype=None):
        if reduction is None:
            reduction = "none"
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: `reduction` must be one of "
                f"{REDUCTIONS}; got {reduction!r}.")
        if not self.per_image and reduction in PER_IMAGE_REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__} normalises over the whole batch, as "
                f"its reference does, so it has no per-image values: "
                f"`reduction` must be one of {REDUCTIONS[:3]}; got "
                f"{reduction!r}.")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if (isinstance(num_classes, numbers.Integral)
                and not isinstance(num_classes, bool)):
            num_classes = int(num_classes)  # NumPy integers too
        checks.check_positive_int("num_classes", num_classes)
        checks.check_format(bounding_box_format)
        self.num_classes = num_classes
        self.bounding_box_format = bounding_box_format
        # The config keeps a dtype name (a DTypePolicy by its compute dtype).
        self._dtype_arg = (dtype if dtype is None or isinstance(dtype, str)
                           else self.dtype)

    # -- hooks a version defines ---------------------------------------------
    def terms(self, truth, levels):
        """The loss terms: `{name: (B,)}` per image (`per_image`), or
        `{name: scalar}`; optionally `(terms, aux)` for `advance_state`.

        Args:
            truth: `GroundTruth`.
            levels: list of float32 raw outputs from `check_levels`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must define `terms(truth, levels)`.")

    def check_levels(self, y_pred):
        """The raw outputs as a list of float32 tensors.

        Checks their number against `strides` and, for an anchor-grid loss
        (`level_anchor_counts()` not None), that level l is
        `(B, H, W, A_l, 5 + C)` with the last two axes static. Raises a
        ValueError naming `y_pred[l]`.
        """
        levels = list(y_pred) if isinstance(y_pred, (list, tuple)) else [
            y_pred]
        strides = getattr(self, "strides", None)
        if strides is not None and len(levels) != len(strides):
            raise ValueError(
                f"`y_pred` must be a list of {len(strides)} levels (strides "
                f"{tuple(strides)}); got {len(levels)}.")
        levels = [tf.cast(level, tf.float32) for level in levels]
        counts = self.level_anchor_counts()
        if counts is None:
            return levels
        depth = 5 + self.num_classes
        for level, (raw, count) in enumerate(zip(levels, counts)):
            if raw.shape.rank != 5 or tuple(raw.shape[3:]) != (count, depth):
                raise ValueError(
                    f"`y_pred[{level}]` must be (B, H, W, {count}, {depth}) "
                    f"({count} anchors of level {level}, 5 + num_classes="
                    f"{self.num_classes} channels); got shape "
                    f"{tuple(raw.shape)}." + STATIC_AXES_HINT)
        return levels

    def level_anchor_counts(self):
        """Anchors per cell of each level, from `self.anchors`
        `(levels, A, 2)`; None for a loss without anchors."""
        anchors = getattr(self, "anchors", None)
        return None if anchors is None else [len(a) for a in anchors]

    def input_image_shape(self, levels):
        """`(height, width)` of the input image: level 0's grid times
        `strides[0]` (ints when static, scalar tensors otherwise)."""
        stride = self.strides[0]
        return dim(levels[0], 1) * stride, dim(levels[0], 2) * stride

    def advance_state(self, truth, levels, aux):
        """Assigns the state variables after one evaluation (default: no
        state). Called only by `__call__`/`call`/`compute_terms`."""

    def logged_terms(self, terms):
        """`{name: value}` for each of `term_names`, from `components`'
        terms (a subclass folds its extra terms in, e.g. v1/v2's `noobj`
        into `obj`)."""
        return {name: terms[name] for name in self.term_names}

    # -- ground truth -----------------------------------------------------------
    def ground_truth(self, y_true, levels):
        """Applies `keras_yolo.assign.groundtruth` to `y_true`: eagerly an
        invalid row raises `GroundTruthError`; compiled, it becomes padding.

        Returns:
            `GroundTruth` (boxes converted to `rel_center_xywh`).
        """
        if not isinstance(y_true, dict) or not {"boxes", "labels"} <= set(
                y_true):
            raise ValueError(
                "`y_true` must be a dict with keys 'boxes' and 'labels'; got "
                f"{type(y_true).__name__}.")
        image_shape = None
        if not self.bounding_box_format.startswith("rel_"):
            image_shape = self.input_image_shape(levels)
        given = tf.convert_to_tensor(y_true["labels"])
        boxes, labels = groundtruth.sanitize(
            y_true, self.num_classes, self.bounding_box_format, image_shape)
        boxes = box_ops.convert(tf.cast(boxes, tf.float32),
                                self.bounding_box_format, TRUTH_FORMAT,
                                image_shape)
        valid = labels >= 0
        boxes = tf.where(valid[..., None], boxes, 0.0)
        # sanitize keeps every valid real row: the rest were invalid.
        invalid = (tf.reduce_sum(tf.cast(groundtruth.real_rows(given),
                                         tf.float32))
                   - tf.reduce_sum(tf.cast(valid, tf.float32)))
        return GroundTruth(boxes, labels, valid, image_shape, invalid)

    # -- evaluation ----------------------------------------------------------
    def _evaluate(self, y_true, y_pred, sample_weight):
        levels = self.check_levels(y_pred)
        truth = self.ground_truth(y_true, levels)
        out = self.terms(truth, levels)
        raw_terms, aux = out if isinstance(out, tuple) else (out, None)
        batch = dim(levels[0], 0)
        terms = {k: self._reduce(tf.cast(v, tf.float32), sample_weight, batch)
                 for k, v in raw_terms.items()}
        total = tf.add_n(list(terms.values()))
        terms = {k: tf.cast(v, self.dtype) for k, v in terms.items()}
        return tf.cast(total, self.dtype), terms, truth, levels, aux

    def _reduce(self, values, sample_weight, batch):
        """One term, reduced as the module docstring says."""
        name = type(self).__name__
        if not self.per_image:
            if values.shape.rank != 0:
                raise ValueError(f"{name}.terms must give scalars; got shape "
                                 f"{values.shape}.")
            if sample_weight is not None:
                weight = tf.cast(sample_weight, tf.float32)
                if weight.shape.rank != 0:
                    raise ValueError(
                        f"{name} normalises over the whole batch, as its "
                        "reference does: `sample_weight` may only be a "
                        f"scalar; got shape {tuple(weight.shape)}.")
                values = values * weight
            if self.reduction == "sum":
                values = values * tf.cast(batch, tf.float32)
            return values
        if values.shape.rank != 1:
            raise ValueError(f"{name}.terms must give per-image values (B,); "
                             f"got shape {values.shape}.")
        weight = None
        if sample_weight is not None:
            weight = tf.cast(sample_weight, tf.float32)
            if weight.shape.rank == 2 and weight.shape[1] == 1:
                weight = weight[:, 0]
            if weight.shape.rank not in (0, 1):
                raise ValueError(
                    f"{name}: `sample_weight` must be a scalar or one weight "
                    f"per image, (B,) or (B, 1); got shape "
                    f"{tuple(weight.shape)}.")
            if (weight.shape.rank == 1 and None not in (weight.shape[0],
                                                        values.shape[0])
                    and weight.shape[0] != values.shape[0]):
                raise ValueError(
                    f"{name}: `sample_weight` has {weight.shape[0]} weights "
                    f"for a batch of {values.shape[0]} images.")
            weight = tf.broadcast_to(weight, tf.shape(values))
            values = values * weight
        if self.reduction == "none":
            return values
        if self.reduction == "sum":
            return tf.reduce_sum(values)
        if self.reduction == "mean_with_sample_weight" and weight is not None:
            return tf.math.divide_no_nan(tf.reduce_sum(values),
                                         tf.reduce_sum(weight))
        if weight is None:
            return tf.reduce_mean(values)
        return tf.reduce_sum(values) / tf.cast(batch, tf.float32)

    def components(self, y_true, y_pred, sample_weight=None):
        """The terms `loss(y_true, y_pred, sample_weight)` would sum now,
        reduced like it (scalars, or `(B,)` with `reduction="none"`).
        Pure: the loss's state is not advanced, so logging the terms never
        changes the loss."""
        return self._evaluate(y_true, y_pred, sample_weight)[1]

    def compute_terms(self, y_true, y_pred, sample_weight=None,
                      return_invalid_count=False):
        """`(total, terms)` from one evaluation, state advanced once.

        `total` is exactly `loss(y_true, y_pred, sample_weight)`, `terms` the
        `components` that sum to it. With `return_invalid_count=True`, also
        the number of invalid ground-truth rows masked in this batch
        (float32 scalar; 0 eagerly, where they raise).
        """
        total, terms, truth, levels, aux = self._evaluate(
            y_true, y_pred, sample_weight)
        self.advance_state(truth, levels, aux)
        if return_invalid_count:
            return total, terms, truth.invalid_count
        return total, terms

    def __call__(self, y_true, y_pred, sample_weight=None):
        with tf.name_scope(self.name):
            return self.compute_terms(y_true, y_pred, sample_weight)[0]

    def call(self, y_true, y_pred):
        return self.compute_terms(y_true, y_pred)[0]

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes,
                      bounding_box_format=self.bounding_box_format,
                      dtype=self._dtype_arg)
        return config
