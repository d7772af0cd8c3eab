"""Self-Adversarial Training's first pass (YOLOv4's freebie).

The network attacks its own input: one FGSM step (Goodfellow et al. 2015)

    x' = clip(x + epsilon x sign(dL(y, f(x)) / dx), 0, 1)

moves each pixel by `epsilon` in the direction that increases the detection
loss; the second pass trains on `x'` with the unchanged labels. The weights
are not updated by the first pass. With `ascend=False` the step goes down
the loss instead, towards the given targets: YOLOv4's own SAT attacks the
image towards an empty ground truth, "the deception that there is no
desired object on the image" (`YoloModel`'s `self_adversarial` option).
"""

import tensorflow as tf


def adversarial_images(model, loss, images, y_true, epsilon, training=False,
                       ascend=True):
    """Perturbs `images` against (or, `ascend=False`, towards)
    `loss(y_true, model(images))`.

    Args:
        model: a Keras model; loss: a callable `loss(y_true, y_pred)`.
        images: `(B, H, W, 3)` float in [0, 1].
        y_true: the ground truth `loss` takes.
        epsilon: step size in image units (e.g. 2 / 255).
        training: passed to the model (False: BatchNorm uses its moving
            statistics and is not updated).
        ascend: True: `x + epsilon sign(dL/dx)` (FGSM, away from
            `y_true`); False: `x - epsilon sign(dL/dx)` (towards `y_true`).

    Returns:
        `(B, H, W, 3)` float32 in [0, 1], without gradient.

    Example:
        >>> perturbed = adversarial_images(model, model.loss, images, y, 2 / 255)
        >>> model.train_on_batch(perturbed, y)
    """
    images = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        value = tf.reduce_sum(loss(y_true, model(images, training=training)))
    gradient = tape.gradient(value, images)
    step = tf.cast(epsilon, tf.float32) * tf.sign(gradient)
    perturbed = images + step if ascend else images - step
    return tf.stop_gradient(tf.clip_by_value(perturbed, 0.0, 1.0))
