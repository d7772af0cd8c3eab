"""`YoloModel`: a `keras.Model` whose loss takes the ground-truth dict."""

import keras
import tensorflow as tf

from keras_yolo.assign import groundtruth

# Loss terms logged during training (v1/v2's "noobj" counts in "obj").
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
    (label out of range, NaN, empty or off-image box) are masked by the loss
    inside a compiled step; their number is reported as the metric
    `invalid_boxes` (summed over the epoch). A loss with `components`
    (every YOLO loss) also logs the epoch means of its terms as `box`, `obj`
    and `cls` (v1/v2's `noobj` counted in `obj`), from the same evaluation
    that gives the loss.

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
        if callable(getattr(self.loss, "components", None)) and not getattr(
                self, "loss_term_trackers", None):
            # Epoch means of the loss terms, logged as `box`, `obj`, `cls`.
            self.loss_term_trackers = [keras.metrics.Mean(name=name)
                                       for name in LOSS_TERMS]

    def _loss_with_terms(self, y, y_pred):
        """`self.loss(y, y_pred)`, recording the terms its `components`
        returns on the way (computed once, state advanced once)."""
        trackers = getattr(self, "loss_term_trackers", None)
        if not trackers:
            return self.loss(y, y_pred)
        loss, parts = self.loss, {}
        components = type(loss).components

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
            terms = {"box": parts.get("box", 0.0),
                     "obj": parts.get("obj", 0.0) + parts.get("noobj", 0.0),
                     "cls": parts.get("cls", 0.0)}
            for tracker in trackers:
                tracker.update_state(terms[tracker.name])
        return total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        if self.loss is None or y is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        num_classes = getattr(self.loss, "num_classes", None)
        box_format = getattr(self.loss, "bounding_box_format", None)
        if num_classes is not None and box_format is not None:
            image_shape = None
            if x is not None and not isinstance(x, (dict, list, tuple)):
                image_shape = tf.shape(x)[1:3]   # pixel formats' far edges
            self.invalid_boxes_tracker.update_state(groundtruth.count_invalid(
                y, num_classes, box_format, image_shape))
        total = self._loss_with_terms(y, y_pred)
        if self.losses:
            total = total + keras.ops.sum(self.losses)
        return total / tf.distribute.get_strategy().num_replicas_in_sync
