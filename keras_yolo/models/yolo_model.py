"""`YoloModel`: a `keras.Model` whose loss takes the ground-truth dict."""

import keras
import tensorflow as tf

from keras_yolo.data.augment.adversarial import adversarial_images
from keras_yolo.losses.base import YoloLoss


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloModel(keras.Model):
    """A functional detector whose `compute_loss` calls its YOLO loss on `(y, y_pred)`.

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
    Another loss that takes the ground-truth dict is called as
    `loss(y, y_pred[, sample_weight])`, without logged terms.

    Self-Adversarial Training (YOLOv4's freebie): `compile(...,
    self_adversarial=epsilon)` makes each training step, with probability
    `self_adversarial_probability` (default 0.5), first alter
    the images instead of the weights, one signed-gradient step of
    `epsilon` down the loss against an empty ground truth (the network
    deceives itself into seeing no object; BatchNorm in inference mode, loss
    state not advanced), then train on the altered images with the real
    ground truth.

    Example:
        >>> model = YoloModel(inputs, [p3, p4, p5])
        >>> model.compile(optimizer="adam", loss=YoloV5Loss(num_classes=3))
        >>> model.fit(dataset)   # dataset of (images, {"boxes", "labels"})
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.invalid_boxes_tracker = keras.metrics.Sum(name="invalid_boxes")

    def compile(self, *args, self_adversarial=0.0,
                self_adversarial_probability=0.5, **kwargs):
        """Keras' `compile`, plus Self-Adversarial Training's step size
        `self_adversarial` (image units, e.g. 2 / 255; 0 disables it) and the
        probability of applying it to a batch."""
        if not float(self_adversarial) >= 0:
            raise ValueError(f"`self_adversarial` must be a step size >= 0; "
                             f"got {self_adversarial!r}.")
        if not 0 <= float(self_adversarial_probability) <= 1:
            raise ValueError("`self_adversarial_probability` must be in "
                             f"[0, 1]; got {self_adversarial_probability!r}.")
        self.self_adversarial = float(self_adversarial)
        self.self_adversarial_probability = float(
            self_adversarial_probability)
        super().compile(*args, **kwargs)
        if isinstance(self.loss, YoloLoss) and not getattr(
                self, "loss_term_trackers", None):
            # Epoch means of the loss terms (created once: Keras tracks
            # metrics by attribute).
            self.loss_term_trackers = [keras.metrics.Mean(name=name)
                                       for name in self.loss.term_names]

    def train_step(self, data):
        if getattr(self, "self_adversarial", 0.0) and isinstance(
                self.loss, YoloLoss):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            x = self.self_adversarial_images(x, y)
            data = keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        return super().train_step(data)

    def self_adversarial_images(self, images, y):
        """SAT's first pass on a batch: `images` moved `self_adversarial`
        down the loss against an empty ground truth, with probability
        `self_adversarial_probability` (else returned unchanged)."""
        images = tf.cast(images, tf.float32)
        empty = {"boxes": tf.zeros_like(y["boxes"]),
                 "labels": -tf.ones_like(y["labels"])}

        def pure_loss(y_true, y_pred):   # components(): no state advance
            return tf.add_n(list(self.loss.components(y_true, y_pred)
                                 .values()))

        def attack():
            return adversarial_images(self, pure_loss, images, empty,
                                      self.self_adversarial, ascend=False)

        return tf.cond(
            tf.random.uniform([]) < self.self_adversarial_probability,
            attack, lambda: images)

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
            logged = self.loss.logged_terms(terms)
            for tracker in getattr(self, "loss_term_trackers", []):
                tracker.update_state(logged[tracker.name])
        elif sample_weight is None:  # another loss that takes the dict
            total = self.loss(y, y_pred)
        else:
            total = self.loss(y, y_pred, sample_weight)
        if self.losses:
            total = total + keras.ops.sum(self.losses)
        return total / tf.distribute.get_strategy().num_replicas_in_sync
