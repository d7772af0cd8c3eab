"""`YoloModel`: a `keras.Model` whose loss takes the ground-truth dict."""

import keras
import tensorflow as tf

from keras_yolo.assign import groundtruth
from keras_yolo.losses.base import YoloLoss

# Loss terms logged for a loss that is not a YoloLoss but has `components`
# ("noobj" counted in "obj"); a YoloLoss names its own (`term_names`).
LOSS_TERMS = ("box", "obj", "cls")


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloModel(keras.Model):
    """A functional detector whose `compute_loss` calls `self.loss(y, y_pred)`.

    Keras 3's compile-time loss wrapper checks that `y_true` and `y_pred` have
    the same structure; a YOLO loss takes a ground-truth dict
    `{"boxes": (B, M, 4), "labels": (B, M)}` and a list of level outputs, so
    the loss is called directly instead. Works with `jit_compile=True` and
    under `tf.distribute` strategies: Keras sums gradients over replicas
    and divides only the losses it reduces itself, so the scalar YOLO loss
    is divided here by the number of replicas in sync.

    Ground-truth rows that break the policy of `keras_yolo.assign.groundtruth`
    (label out of range, NaN, empty or off-image box; pixel boxes against
    the input size the loss reads from its levels) are masked by the loss
    inside a compiled step; their number is reported as the metric
    `invalid_boxes` (summed over the epoch). A `YoloLoss` also logs the
    epoch means of its terms under its `term_names` (`box`, `obj`, `cls`
    for v1-v5, v1/v2's `noobj` counted in `obj`; `box`, `cls`, `dfl` for
    v8): one `compute_terms` call gives the loss, its terms and the
    invalid-row count, so the loss's state advances once a step.
    `sample_weight` from the dataset goes to the loss (one weight per image).

    Example:
        >>> model = YoloModel(inputs, [p3, p4, p5])
        >>> model.compile(optimizer="adam", loss=YoloV5Loss(num_classes=3))
        >>> model.fit(dataset)   # dataset of (images, {"boxes", "labels"})
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.invalid_boxes_tracker = keras.metrics.Sum(name="invalid_boxes")

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        if isinstance(self.loss, YoloLoss):
            names = self.loss.term_names
        elif callable(getattr(self.loss, "components", None)):
            names = LOSS_TERMS
        else:
            names = ()
        if names and not getattr(self, "loss_term_trackers", None):
            # Epoch means of the loss terms (created once, as Keras tracks
            # metrics by attribute).
            self.loss_term_trackers = [keras.metrics.Mean(name=name)
                                       for name in names]

    def _log_terms(self, logged):
        for tracker in getattr(self, "loss_term_trackers", []):
            tracker.update_state(logged[tracker.name])

    def _legacy_loss(self, x, y, y_pred, sample_weight):
        """A loss that is not a `YoloLoss` (a user's, or one not yet moved
        onto the base): counts invalid rows against the batch's image size
        and records the terms its `components` returns during the call."""
        if sample_weight is not None:
            raise ValueError(
                f"{type(self.loss).__name__} is not a YoloLoss: YoloModel "
                "cannot pass it `sample_weight`.")
        num_classes = getattr(self.loss, "num_classes", None)
        box_format = getattr(self.loss, "bounding_box_format", None)
        if num_classes is not None and box_format is not None:
            image_shape = None
            if x is not None and not isinstance(x, (dict, list, tuple)):
                image_shape = tf.shape(x)[1:3]   # pixel formats' far edges
            self.invalid_boxes_tracker.update_state(groundtruth.count_invalid(
                y, num_classes, box_format, image_shape))
        loss = self.loss
        components = getattr(type(loss), "components", None)
        if not getattr(self, "loss_term_trackers", None) or components is None:
            return loss(y, y_pred)
        parts = {}

        def recording(*args, **kwargs):
            out = components(loss, *args, **kwargs)
            parts.update(out)
            return out

        loss.components = recording
        try:
            total = loss(y, y_pred)
        finally:
            del loss.components
        if parts:
            self._log_terms({
                "box": parts.get("box", 0.0),
                "obj": parts.get("obj", 0.0) + parts.get("noobj", 0.0),
                "cls": parts.get("cls", 0.0)})
        return total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        if self.loss is None or y is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        if isinstance(sample_weight, dict):
            # Keras repeats the one per-image weight for each key of `y`.
            sample_weight = next(iter(sample_weight.values()))
        if isinstance(self.loss, YoloLoss):
            total, terms, invalid = self.loss.compute_terms(
                y, y_pred, sample_weight, return_invalid_count=True)
            self.invalid_boxes_tracker.update_state(invalid)
            self._log_terms(self.loss.logged_terms(terms))
        else:
            total = self._legacy_loss(x, y, y_pred, sample_weight)
        if self.losses:
            total = total + keras.ops.sum(self.losses)
        return total / tf.distribute.get_strategy().num_replicas_in_sync
