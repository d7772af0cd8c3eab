"""YoloV1Decode and the darknet output layout: against numpy, libdarknet and the
assignment's units."""

import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.assign import yolo_v1 as assign
from keras_yolo.layers import YoloV1Decode
from keras_yolo.cell_grid import from_darknet_layout, to_darknet_layout
from references import sigmoid, softmax
from v1_cases import kept_objects, random_case


def test_decode_logistic_matches_numpy():
    rng = np.random.default_rng(6)
    s, nb, c = 3, 2, 4
    raw = rng.normal(size=(2, s, s, nb * 5 + c)).astype(np.float32)
    out = {k: v.numpy() for k, v in YoloV1Decode(c, s, nb)(tf.constant(raw)).items()}
    for b in range(2):
        for row in range(s):
            for col in range(s):
                probs = softmax(raw[b, row, col, nb * 5:].astype(np.float64))
                for j in range(nb):
                    t = raw[b, row, col, 5 * j:5 * j + 5].astype(np.float64)
                    n = (row * s + col) * nb + j
                    box = [(col + sigmoid(t[0])) / s, (row + sigmoid(t[1])) / s,
                           sigmoid(t[2]), sigmoid(t[3])]
                    np.testing.assert_allclose(out["boxes"][b, n], box, rtol=1e-5)
                    assert out["objectness"][b, n] == pytest.approx(sigmoid(t[4]), rel=1e-5)
                    np.testing.assert_allclose(out["class_probs"][b, n], probs, rtol=1e-5)


def test_decode_linear_is_darknets_get_detection_boxes():
    # darknet: x = (t_x + col) / S * w_img, w = t_w^2 * w_img, scale = t_o.
    rng = np.random.default_rng(7)
    s, nb, c = 3, 2, 2
    raw = rng.uniform(0, 1, (1, s, s, nb * 5 + c)).astype(np.float32)
    out = YoloV1Decode(c, s, nb, bounding_box_format="center_xywh",
                       image_shape=(60, 90), parametrization="linear")(tf.constant(raw))
    out = {k: v.numpy() for k, v in out.items()}
    flat = to_darknet_layout(tf.constant(raw), nb, c).numpy()[0]
    for i in range(s * s):
        row, col = divmod(i, s)
        for j in range(nb):
            box_index = s * s * (c + nb) + (i * nb + j) * 4
            p = flat[box_index:box_index + 4]
            want = [(p[0] + col) / s * 90, (p[1] + row) / s * 60,
                    p[2] ** 2 * 90, p[3] ** 2 * 60]
            np.testing.assert_allclose(out["boxes"][0, i * nb + j], want, rtol=1e-5, atol=1e-4)
            assert out["objectness"][0, i * nb + j] == pytest.approx(
                flat[s * s * c + i * nb + j])
            np.testing.assert_allclose(out["class_probs"][0, i * nb + j],
                                       flat[i * c:(i + 1) * c])


def test_decode_inverts_the_assignment_units():
    # Raw outputs built from the targets (logit of offsets and sizes) decode
    # back to the kept truth boxes: loss and decoding agree on units.
    rng = np.random.default_rng(16)
    boxes, labels, _ = random_case(rng, batch=2, s=4, nb=1, c=3, m=8)
    t = assign.cell_targets(boxes, labels, 4, 3)
    p = np.clip(t["boxes"].numpy(), 1e-4, 1 - 1e-4)
    raw = np.concatenate([np.log(p / (1 - p)), np.zeros((2, 4, 4, 4))], -1)
    out = YoloV1Decode(3, 4, 1)(tf.constant(raw, tf.float32))["boxes"].numpy()
    for b in range(2):
        for (row, col), _ in kept_objects(boxes[b], labels[b], 4).items():
            first = next(m for m in range(8) if labels[b, m] >= 0
                         and min(int(boxes[b, m, 0] * 4), 3) == col
                         and min(int(boxes[b, m, 1] * 4), 3) == row)
            np.testing.assert_allclose(out[b, row * 4 + col], boxes[b, first],
                                       atol=1e-4)


def test_darknet_layout_round_trip_and_positions():
    s, nb, c = 2, 3, 4
    raw = tf.reshape(tf.range(2 * s * s * (nb * 5 + c), dtype=tf.float32),
                     [2, s, s, nb * 5 + c])
    flat = to_darknet_layout(raw, nb, c)
    np.testing.assert_array_equal(from_darknet_layout(flat, s, nb, c), raw)
    # Cell (row 1, col 0) = darknet cell 2; its box 1's t_w and class 3.
    r = raw.numpy()[0, 1, 0]
    f = flat.numpy()[0]
    assert f[s * s * (c + nb) + (2 * nb + 1) * 4 + 2] == r[5 + 2]
    assert f[2 * c + 3] == r[nb * 5 + 3]
    assert f[s * s * c + 2 * nb + 1] == r[5 + 4]
