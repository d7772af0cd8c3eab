"""The small YOLOv4 model: levels for YoloV4Loss and YoloV4Decode, and a fit."""

import keras
import numpy as np
import pytest

from keras_yolo.layers import YoloV4Decode
from v4_cases import ANCHORS, C, SXY, make_case, v4_loss


def test_small_v4_outputs_levels_for_the_loss_and_decoder():
    from keras_yolo.models import YoloModel
    from keras_yolo.models.small_v4 import small_v4

    model = small_v4(num_classes=C, input_shape=(64, 64, 3), width=0.25)
    assert isinstance(model, YoloModel)
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(8, 8, 3, 8), (4, 4, 3, 8), (2, 2, 3, 8)]
    activations = {getattr(layer, "activation", None) for layer in model.layers}
    assert {"mish", "leaky"} <= activations
    assert any(type(layer).__name__ == "SpatialPyramidPooling" for layer in model.layers)
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    outputs = model(images)
    _, truths, labels = make_case(17, batch=2)
    value = v4_loss()({"boxes": truths, "labels": labels}, outputs)
    assert np.isfinite(float(value))
    decoded = YoloV4Decode(anchors=ANCHORS, scale_x_y=SXY)(outputs)
    assert decoded["boxes"].shape == (2, 3 * (64 + 16 + 4), 4)


@pytest.mark.slow
def test_small_v4_fit_lowers_the_v4_loss():
    from keras_yolo.models.small_v4 import small_v4

    keras.utils.set_random_seed(0)
    model = small_v4(num_classes=C, input_shape=(64, 64, 3), width=0.5)
    model.compile(keras.optimizers.Adam(2e-3), loss=v4_loss())
    _, truths, labels = make_case(18, batch=4)
    images = np.random.default_rng(1).uniform(0, 1, (4, 64, 64, 3)).astype(np.float32)
    y = {"boxes": truths, "labels": labels}
    history = model.fit(images, y, batch_size=4, epochs=15, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
