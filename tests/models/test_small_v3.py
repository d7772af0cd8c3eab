"""The small YOLOv3 model fits with YoloV3Loss."""

import keras
import numpy as np

from keras_yolo.losses import YoloV3Loss
from v3_cases import SMALL_ANCHORS, random_case


def test_small_v3_model_fits_with_the_loss():
    from keras_yolo.models.small_v3 import small_v3

    keras.utils.set_random_seed(0)
    model = small_v3(num_classes=3, input_size=64, filters=(8, 16, 16, 32, 32),
                     blocks=(1, 1, 1, 1, 1), neck_filters=(8, 16, 16))
    shapes = [tuple(o.shape) for o in model.outputs]
    assert shapes == [(None, 8, 8, 3, 8), (None, 4, 4, 3, 8), (None, 2, 2, 3, 8)]
    _, boxes, labels = random_case(40, batch=4)
    images = np.random.default_rng(0).uniform(size=(4, 64, 64, 3)).astype("float32")
    loss = YoloV3Loss(num_classes=3, anchors=SMALL_ANCHORS)
    model.compile(keras.optimizers.Adam(1e-3), loss=loss, run_eagerly=True)
    y_true = {"boxes": boxes, "labels": labels}
    history = model.fit(images, y_true, batch_size=4, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
