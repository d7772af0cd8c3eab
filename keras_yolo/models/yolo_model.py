"""`YoloModel`: a `keras.Model` whose loss takes the ground-truth dict."""

import keras
import tensorflow as tf


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

    Example:
        >>> model = YoloModel(inputs, [p3, p4, p5])
        >>> model.compile(optimizer="adam", loss=YoloV5Loss(num_classes=3))
        >>> model.fit(dataset)   # dataset of (images, {"boxes", "labels"})
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        if self.loss is None or y is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        total = self.loss(y, y_pred)
        if self.losses:
            total = total + keras.ops.sum(self.losses)
        return total / tf.distribute.get_strategy().num_replicas_in_sync
