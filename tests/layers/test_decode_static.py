"""Decoders keep the candidate count static for fixed-size inputs (NMS and export need it)."""

import keras
import numpy as np
import pytest

from keras_yolo import layers, postprocess


@pytest.mark.parametrize("decoder,levels", [
    (layers.YoloV2Decode, [(8, 8)]),
    (layers.YoloV3Decode, [(16, 16), (8, 8), (4, 4)]),
    (layers.YoloV4Decode, [(16, 16), (8, 8), (4, 4)]),
    (layers.YoloV5Decode, [(16, 16), (8, 8), (4, 4)]),
])
def test_symbolic_decode_has_static_candidates_and_feeds_nms(decoder, levels):
    anchors = 3 if decoder is not layers.YoloV2Decode else 5
    inputs = [keras.Input((h, w, anchors, 7)) for h, w in levels]
    decoded = decoder()(inputs)
    n = sum(h * w * anchors for h, w in levels)
    assert decoded["boxes"].shape[1:] == (n, 4)
    assert decoded["objectness"].shape[1:] == (n,)
    assert decoded["class_probs"].shape[1:] == (n, 2)
    detections = postprocess.NonMaxSuppression(max_det=10)(decoded)
    model = keras.Model(inputs, detections)
    raw = [np.random.default_rng(0).normal(size=(2, h, w, anchors, 7)).astype("float32")
           for h, w in levels]
    out = model(raw)
    assert out["boxes"].shape == (2, 10, 4)
    eager = postprocess.non_max_suppression(decoder()(raw), max_det=10)
    np.testing.assert_allclose(out["boxes"], eager["boxes"], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(out["num_detections"], eager["num_detections"])
