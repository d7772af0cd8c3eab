"""YoloV4Decode against the float64 reference (`v4_reference.py`)."""

import numpy as np
import tensorflow as tf

import v4_reference as ref
from keras_yolo.layers import YoloV4Decode
from v4_cases import ANCHORS, IMAGE, STRIDES, SXY, make_case


def test_decode_matches_reference_and_reaches_past_cell_borders():
    raws, _, _ = make_case(2)
    raws[0][0, 2, 3, 1, 0:2] = [30.0, -30.0]  # saturated logistic
    layer = YoloV4Decode(anchors=ANCHORS, strides=STRIDES, scale_x_y=SXY)
    out = layer([tf.constant(r, tf.float32) for r in raws])
    want = [ref.decode(r, ANCHORS[l], STRIDES[l], SXY[l]) for l, r in enumerate(raws)]
    np.testing.assert_allclose(out["boxes"], np.concatenate([w[0] for w in want], 1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["objectness"], np.concatenate([w[1] for w in want], 1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["class_probs"], np.concatenate([w[2] for w in want], 1),
                               rtol=1e-5, atol=1e-6)
    # Cell (j=2, i=3), anchor 1 of P3: x = (3 + 1.1) / 8, y = (2 - 0.1) / 8.
    index = (2 * 8 + 3) * 3 + 1
    np.testing.assert_allclose(out["boxes"][0, index, :2], [4.1 / 8, 1.9 / 8], atol=1e-6)


def test_decode_pixel_format_and_config_round_trip():
    raws, _, _ = make_case(3)
    layer = YoloV4Decode(anchors=ANCHORS, strides=STRIDES, scale_x_y=SXY,
                         bounding_box_format="xyxy")
    clone = YoloV4Decode.from_config(layer.get_config())
    preds = [tf.constant(r, tf.float32) for r in raws]
    rel = YoloV4Decode(anchors=ANCHORS, strides=STRIDES, scale_x_y=SXY)(preds)["boxes"].numpy()
    want = np.concatenate([rel[..., :2] - rel[..., 2:] / 2, rel[..., :2] + rel[..., 2:] / 2], -1) * IMAGE
    np.testing.assert_allclose(clone(preds)["boxes"], want, rtol=1e-5, atol=1e-4)
    assert clone.get_config() == layer.get_config()
