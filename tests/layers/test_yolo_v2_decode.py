"""YoloV2Decode against the formula in float64 numpy, and its default anchors."""

import numpy as np
import pytest

from keras_yolo import anchors as default_anchors
from keras_yolo.layers import YoloV2Decode
from references import sigmoid, softmax
from v2_cases import ANCHORS, ANCHORS_CELLS, STRIDE, random_case


@pytest.mark.parametrize("fmt", ["rel_center_xywh", "xyxy"])
def test_decode_matches_numpy(fmt):
    raw, _, _ = random_case(8, grid=(4, 6))
    out = YoloV2Decode(anchors=ANCHORS, bounding_box_format=fmt)(raw)
    b, h, w, a = 1, 2, 5, 2
    t = raw[b, h, w, a].astype(np.float64)
    x = (sigmoid(t[0]) + w) / 6
    y = (sigmoid(t[1]) + h) / 4
    bw = ANCHORS_CELLS[a, 0] * np.exp(t[2]) / 6
    bh = ANCHORS_CELLS[a, 1] * np.exp(t[3]) / 4
    expected = np.array([x, y, bw, bh])
    if fmt == "xyxy":
        size = np.array([6 * STRIDE, 4 * STRIDE] * 2)
        expected = np.array([x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2]) * size
    n = (h * 6 + w) * 3 + a
    assert out["boxes"].shape == (3, 4 * 6 * 3, 4)
    np.testing.assert_allclose(out["boxes"][b, n], expected, rtol=1e-5)
    assert float(out["objectness"][b, n]) == pytest.approx(sigmoid(t[4]), rel=1e-6)
    np.testing.assert_allclose(out["class_probs"][b, n], softmax(t[5:]), rtol=1e-5)


def test_decode_default_anchors_are_yolov2_coco():
    layer = YoloV2Decode()
    assert layer.anchors == default_anchors.YOLOV2_COCO_ANCHORS
