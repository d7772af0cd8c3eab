"""`YoloModel`: a `keras.Model` whose loss takes the ground-truth dict."""

import keras
import tensorflow as tf

from keras_yolo.assign import groundtruth


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
    `invalid_boxes` (summed over the epoch).

    Example:
        >>> model = YoloModel(inputs, [p3, p4, p5])
        >>> model.compile(optimizer="adam", loss=YoloV5Loss(num_classes=3))
        >>> model.fit(dataset)   # dataset of (images, {"boxes", "labels"})
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.invalid_boxes_tracker = keras.metrics.Sum(name="invalid_boxes")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        if self.loss is None or y is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        num_classes = getattr(self.loss, "num_classes", None)
        box_format = getattr(self.loss, "bounding_box_format", None)
        if num_classes is not None and box_format is not None:
            self.invalid_boxes_tracker.update_state(
                groundtruth.count_invalid(y, num_classes, box_format))
        total = self.loss(y, y_pred)
        if self.losses:
            total = total + keras.ops.sum(self.losses)
        return total / tf.distribute.get_strategy().num_replicas_in_sync
