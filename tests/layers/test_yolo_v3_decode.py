"""YoloV3Decode against the formula in float64 numpy, and in a functional model."""

import keras
import numpy as np

from keras_yolo.layers import YoloV3Decode
from references import sigmoid
from v3_cases import GRIDS, SMALL_ANCHORS, STRIDES, random_case


def test_decode_matches_numpy_and_orders_level_row_col_anchor():
    raw, _, _ = random_case(20, batch=2, num_classes=2)
    out = YoloV3Decode(anchors=SMALL_ANCHORS, bounding_box_format="xyxy")(raw)
    assert out["boxes"].shape == (2, 252, 4)
    assert out["class_probs"].shape == (2, 252, 2)
    boxes, obj, probs = [], [], []
    for level, r in enumerate(raw):
        r = r.astype(np.float64)
        _, h, w, na, _ = r.shape
        for row in range(h):
            for col in range(w):
                for a in range(na):
                    t = r[:, row, col, a]
                    cx = (sigmoid(t[:, 0]) + col) * STRIDES[level]
                    cy = (sigmoid(t[:, 1]) + row) * STRIDES[level]
                    bw = SMALL_ANCHORS[level][a][0] * np.exp(t[:, 2])
                    bh = SMALL_ANCHORS[level][a][1] * np.exp(t[:, 3])
                    boxes.append(np.stack([cx - bw / 2, cy - bh / 2,
                                           cx + bw / 2, cy + bh / 2], -1))
                    obj.append(sigmoid(t[:, 4]))
                    probs.append(sigmoid(t[:, 5:]))
    np.testing.assert_allclose(out["boxes"], np.stack(boxes, 1), rtol=1e-5,
                               atol=1e-4)
    np.testing.assert_allclose(out["objectness"], np.stack(obj, 1), rtol=1e-5)
    np.testing.assert_allclose(out["class_probs"], np.stack(probs, 1),
                               rtol=1e-5)


def test_decode_in_a_functional_model_with_unknown_size():
    inputs = [keras.Input((None, None, 3, 7)) for _ in GRIDS]
    outputs = YoloV3Decode(anchors=SMALL_ANCHORS)(inputs)
    model = keras.Model(inputs, outputs)
    raw, _, _ = random_case(21, num_classes=2)
    out = model(raw)
    assert out["boxes"].shape == (2, 252, 4)
