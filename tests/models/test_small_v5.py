"""The small YOLOv5 model fits with YoloV5Loss."""

import numpy as np
import pytest
import keras

from keras_yolo.anchors import YOLOV5_ANCHORS
from keras_yolo.losses import YoloV5Loss
from v5_cases import random_truths


@pytest.mark.slow
def test_small_v5_fits_with_the_loss():
    """`model.fit` with the ground-truth dict: the loss falls on one batch."""
    from keras_yolo.models.small_v5 import small_v5

    keras.utils.set_random_seed(0)
    model = small_v5(num_classes=3, input_size=64, filters=(8, 8, 16, 16, 32))
    assert [tuple(o.shape) for o in model.outputs] == [
        (None, 8, 8, 3, 8), (None, 4, 4, 3, 8), (None, 2, 2, 3, 8)]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 64, 64, 3)).astype(np.float32)
    boxes, labels = random_truths(rng, [2, 3, 1, 2], 4, 3)
    anchors = (np.asarray(YOLOV5_ANCHORS) * 64 / 416).tolist()
    model.compile(keras.optimizers.Adam(3e-3),
                  loss=YoloV5Loss(num_classes=3, anchors=anchors),
                  jit_compile=False)
    history = model.fit(images, {"boxes": boxes, "labels": labels},
                        batch_size=4, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
