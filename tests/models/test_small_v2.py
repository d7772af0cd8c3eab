"""The small YOLOv2 passthrough model trains with YoloV2Loss."""

import numpy as np
import tensorflow as tf

from keras_yolo.losses import YoloV2Loss
from v2_cases import ANCHORS


def test_small_v2_passthrough_model_gets_gradients():
    from keras_yolo.models.small_v2 import small_v2
    model = small_v2(num_classes=2, num_anchors=3, input_size=64, width=2,
                     passthrough_filters=2)
    assert model.output_shape == (None, 2, 2, 3, 7)
    # The passthrough: stride-16 features (4 x 4) reorganised to 2 x 2.
    assert model.get_layer("reorg").output.shape[1:3] == (2, 2)
    assert model.get_layer("route").output.shape[-1] == 2 * 4 + 64
    loss = YoloV2Loss(num_classes=2, anchors=ANCHORS)
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3))
    y = {"boxes": np.array([[[0.3, 0.4, 0.2, 0.3]]] * 2, np.float32),
         "labels": np.array([[1], [0]], np.int32)}
    with tf.GradientTape() as tape:
        value = loss(y, model(images.astype(np.float32), training=True))
    passthrough = model.get_layer("passthrough").kernel
    grads = tape.gradient(value, model.trainable_weights + [passthrough])
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert float(tf.reduce_max(tf.abs(grads[-1]))) > 0  # the route is used
