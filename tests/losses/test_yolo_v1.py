"""YoloV1Loss: the seed's objective in float64 numpy, hand cases, and darknet parity."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import require_file
from keras_yolo.assign import yolo_v1 as assign
from keras_yolo.layers import YoloV1Decode
from keras_yolo.cell_grid import to_darknet_layout
from keras_yolo.losses import YoloV1Loss
from references import center_iou, sigmoid
from v1_cases import gt, kept_objects, random_case, seed_loss_np


def components(loss, boxes, labels, raw):
    return {k: float(v) for k, v in
            loss.components(gt(boxes, labels), tf.constant(raw)).items()}


# --- the seed's objective ----------------------------------------------------

def test_one_object_hand_computed():
    # All raw outputs 0: x = y = w = h = C = 0.5, p = (0.5, 0.5). The truth
    # (centre (0.25, 0.25), size 0.5) is exactly the predicted box of cell
    # (0, 0): IoU 1, no box error.
    loss = YoloV1Loss(num_classes=2, grid_size=2, boxes_per_cell=1)
    raw = np.zeros((1, 2, 2, 7), np.float32)
    parts = components(loss, [[[0.25, 0.25, 0.5, 0.5]]], [[0]], raw)
    assert parts["box"] == pytest.approx(0.0, abs=1e-7)
    assert parts["obj"] == pytest.approx((1 - 0.5) ** 2)
    assert parts["noobj"] == pytest.approx(0.5 * 3 * 0.5 ** 2)
    assert parts["cls"] == pytest.approx(0.5 ** 2 + 0.5 ** 2)
    total = loss(gt([[[0.25, 0.25, 0.5, 0.5]]], [[0]]), tf.constant(raw))
    assert float(total) == pytest.approx(0.25 + 0.375 + 0.5)


def test_one_object_box_term_hand_computed():
    # Truth in cell (1, 0) of a 2x2 grid, offset (0.5, 0.5), size 0.25 x 1.0;
    # prediction x = y = w = h = 0.5: box = 5 (0 + 0 + (√.5 - √.25)² + (√.5 - 1)²).
    loss = YoloV1Loss(num_classes=2, grid_size=2, boxes_per_cell=1)
    raw = np.zeros((1, 2, 2, 7), np.float32)
    parts = components(loss, [[[0.25, 0.75, 0.25, 1.0]]], [[1]], raw)
    expected = 5 * ((np.sqrt(.5) - .5) ** 2 + (np.sqrt(.5) - 1) ** 2)
    assert parts["box"] == pytest.approx(expected, rel=1e-6)
    # IoU of a 0.5 x 0.5 box with a 0.25 x 1.0 box on the same centre: 0.125 / 0.375.
    assert parts["obj"] == pytest.approx((1 / 3 - 0.5) ** 2, rel=1e-5)


def test_empty_image_only_noobj():
    loss = YoloV1Loss(num_classes=3, grid_size=3, boxes_per_cell=2)
    raw = np.random.default_rng(1).normal(size=(2, 3, 3, 13)).astype(np.float32)
    parts = components(loss, np.zeros((2, 4, 4)), -np.ones((2, 4)), raw)
    conf = sigmoid(raw[..., 4:10:5].astype(np.float64))
    assert parts["box"] == parts["obj"] == parts["cls"] == 0.0
    assert parts["noobj"] == pytest.approx(0.5 * np.sum(conf ** 2) / 2, rel=1e-6)


def test_two_objects_matches_numpy():
    boxes = [[[0.2, 0.3, 0.3, 0.4], [0.8, 0.7, 0.2, 0.1]]]
    raw = np.random.default_rng(2).normal(size=(1, 3, 3, 13)).astype(np.float32)
    loss = YoloV1Loss(num_classes=3, grid_size=3, boxes_per_cell=2)
    got = components(loss, boxes, [[0, 2]], raw)
    want = seed_loss_np(np.array(boxes), [[0, 2]], raw, 3, 2, 3)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k


def test_two_truths_in_one_cell_keep_the_first():
    raw = np.random.default_rng(3).normal(size=(1, 2, 2, 8)).astype(np.float32)
    loss = YoloV1Loss(num_classes=3, grid_size=2, boxes_per_cell=1)
    first, second = [0.1, 0.1, 0.2, 0.2], [0.3, 0.4, 0.4, 0.3]   # both cell (0, 0)
    both = components(loss, [[first, second]], [[2, 0]], raw)
    alone = components(loss, [[first, [0, 0, 0, 0]]], [[2, -1]], raw)
    other = components(loss, [[second, [0, 0, 0, 0]]], [[0, -1]], raw)
    assert both == alone
    assert both["cls"] != pytest.approx(other["cls"])


def test_padded_rows_are_ignored_whatever_they_hold():
    rng = np.random.default_rng(15)
    boxes, labels, raw = random_case(rng, batch=2, s=3, nb=2, c=3, m=6)
    labels[:, 4:] = -1
    loss = YoloV1Loss(3, 3, 2)
    clean = boxes.copy()
    clean[:, 4:] = 0.0
    garbage = boxes.copy()
    garbage[:, 4] = np.nan
    garbage[:, 5] = [-3.0, 7.0, -1.0, 1e9]
    want = float(loss(gt(clean, labels), raw))
    assert float(loss(gt(garbage, labels), raw)) == want
    assert np.isfinite(want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    boxes, labels, raw = random_case(rng, batch=3, s=4, nb=2, c=5, m=12)
    loss = YoloV1Loss(num_classes=5, grid_size=4, boxes_per_cell=2,
                      lambda_coord=3.0, lambda_noobj=0.25)
    got = components(loss, boxes, labels, raw)
    want = seed_loss_np(boxes, labels, raw, 4, 2, 5, 3.0, 0.25)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k
    total = float(loss(gt(boxes, labels), tf.constant(raw)))
    assert total == pytest.approx(sum(want.values()), rel=1e-5)


def test_no_overlap_falls_back_to_nearest_box():
    # Predictor 0 far away and large, predictor 1 tiny but near: neither
    # overlaps the truth, so the nearest (x/S, y/S, w, h) box is responsible.
    s, nb, c = 2, 2, 1
    raw = np.full((1, s, s, nb * 5 + c), -8.0, np.float32)
    logit = lambda p: np.log(p / (1 - p))
    raw[0, 0, 0, 0:4] = logit(np.array([0.95, 0.95, 0.3, 0.3]))
    raw[0, 0, 0, 5:9] = logit(np.array([0.15, 0.15, 0.01, 0.01]))
    boxes = np.array([[[0.025, 0.025, 0.02, 0.02]]], np.float32)  # cell (0, 0)
    pred = np.stack([sigmoid(raw[0, 0, 0, 0:4]), sigmoid(raw[0, 0, 0, 5:9])])
    t = [0.05, 0.05, 0.02, 0.02]
    ious = [center_iou((p[0] / s, p[1] / s, p[2], p[3]), (t[0] / s, t[1] / s, t[2], t[3]))
            for p in pred]
    assert max(ious) == 0.0   # the case under test
    one_hot, _ = assign.responsible_predictor(
        tf.constant(pred[None, None, None], tf.float32),
        tf.constant([[[t]]], tf.float32), s)
    np.testing.assert_array_equal(one_hot.numpy()[0, 0, 0], [0.0, 1.0])
    got = components(YoloV1Loss(c, s, nb), boxes, [[0]], raw)
    want = seed_loss_np(boxes, [[0]], raw, s, nb, c)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k


def test_pixel_format_equals_relative():
    rng = np.random.default_rng(4)
    boxes, labels, raw = random_case(rng, batch=2, s=3, nb=2, c=2, m=5)
    rel = YoloV1Loss(2, 3, 2)(gt(boxes, labels), tf.constant(raw))
    xyxy = keras_yolo_convert(boxes, (120, 200))
    pix = YoloV1Loss(2, 3, 2, bounding_box_format="xyxy",
                     image_shape=(120, 200))(gt(xyxy, labels), tf.constant(raw))
    assert float(pix) == pytest.approx(float(rel), rel=1e-5)


def keras_yolo_convert(boxes, image_shape):
    from keras_yolo.boxes import convert
    return convert(tf.constant(boxes), "rel_center_xywh", "xyxy",
                   image_shape).numpy()


def test_linear_parametrization_matches_numpy_on_raw_values():
    # The seed's formula on darknet's parametrisation: x = t_x, √w = t_w,
    # C = t_o, p = c (raw class scores).
    rng = np.random.default_rng(5)
    s, nb, c = 2, 2, 2
    boxes = np.array([[[0.3, 0.6, 0.4, 0.2], [0.7, 0.2, 0.1, 0.5]]], np.float32)
    raw = rng.uniform(0.05, 0.95, (1, s, s, nb * 5 + c)).astype(np.float32)
    got = components(YoloV1Loss(c, s, nb, parametrization="linear"),
                     boxes, [[1, 0]], raw)
    want = dict(box=0.0, obj=0.0, noobj=0.0, cls=0.0)
    cells = kept_objects(boxes[0], [1, 0], s)
    for row in range(s):
        for col in range(s):
            v = raw[0, row, col].astype(np.float64)
            preds = [v[5 * j:5 * j + 5] for j in range(nb)]
            if (row, col) not in cells:
                want["noobj"] += sum(0.5 * p[4] ** 2 for p in preds)
                continue
            tx, ty, tw, th, label = cells[(row, col)]
            ious = [center_iou(((col + p[0]) / s, (row + p[1]) / s, p[2] ** 2, p[3] ** 2),
                            ((col + tx) / s, (row + ty) / s, tw, th)) for p in preds]
            best = int(np.argmax(ious))
            assert ious[best] > 0
            for j, p in enumerate(preds):
                if j != best:
                    want["noobj"] += 0.5 * p[4] ** 2
                    continue
                want["box"] += 5 * ((p[0] - tx) ** 2 + (p[1] - ty) ** 2
                                    + (p[2] - np.sqrt(tw)) ** 2
                                    + (p[3] - np.sqrt(th)) ** 2)
                want["obj"] += (ious[j] - p[4]) ** 2
            want["cls"] += np.sum((np.eye(c)[label] - v[5 * nb:]) ** 2)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k


# --- darknet parity -------------------------------------------------------------

def darknet_truth(boxes, labels, s, c):
    """darknet's fill_truth_region (without shuffling): first object per cell."""
    truth = np.zeros((len(boxes), s * s, 1 + c + 4), np.float32)
    for b in range(len(boxes)):
        for (row, col), (x, y, w, h, label) in kept_objects(boxes[b], labels[b], s).items():
            t = truth[b, row * s + col]
            t[0] = 1
            if label < c:
                t[1 + label] = 1
            t[1 + c:] = [x, y, w, h]
    return truth


def darknet_raw(rng, batch, s, nb, c):
    """Raw outputs in darknet's ranges: offsets and roots in (0, 1)."""
    raw = rng.uniform(0.0, 1.0, (batch, s, s, nb * 5 + c))
    return raw.astype(np.float32)


def parity(reference, boxes, labels, raw, s, nb, c, **options):
    loss = YoloV1Loss(c, s, nb, darknet_compat=True, **options)
    raw_t = tf.constant(raw)
    with tf.GradientTape() as tape:
        tape.watch(raw_t)
        value = loss(gt(boxes, labels), raw_t)
    grad = tape.gradient(value, raw_t)
    ours = to_darknet_layout(-raw.shape[0] * grad, nb, c).numpy()
    darknet_opts = dict(coord_scale=options.get("coord_scale", 5.0),
                        object_scale=options.get("object_scale", 1.0),
                        noobject_scale=options.get("noobject_scale", 0.5),
                        class_scale=options.get("class_scale", 1.0),
                        rescore=options.get("rescore", True),
                        sqrt=options.get("sqrt", True),
                        softmax=options.get("softmax", False))
    flat = to_darknet_layout(raw_t, nb, c).numpy()
    delta, cost = reference.detection_delta(
        flat, darknet_truth(boxes, labels, s, c), s, nb, c, **darknet_opts)
    return ours, delta, cost


@pytest.fixture(scope="module")
def darknet():
    import darknet_v1_reference as reference
    for name, dirs in (("libdarknet.so", reference.LIBRARY_DIRS),
                       ("darknet.h", reference.HEADER_DIRS)):
        found = [os.path.join(d, name) for d in dirs
                 if os.path.exists(os.path.join(d, name))]
        require_file(found[0] if found else os.path.join(dirs[0], name),
                     "(Debian package darknet, installed by .ci/install_parity)")
    reference.build()
    return reference


PARITY_CASES = [
    dict(),                                                     # cfg/yolov1.cfg
    dict(rescore=False),
    dict(softmax=True),
    dict(sqrt=False, coord_scale=2.0, object_scale=1.5, noobject_scale=0.25,
         class_scale=0.7),
]


@pytest.mark.parametrize("options", PARITY_CASES,
                         ids=["yolov1_cfg", "no_rescore", "softmax", "no_sqrt_scales"])
def test_darknet_delta_random(darknet, options):
    rng = np.random.default_rng(len(str(options)))
    s, nb, c, batch, m = 4, 3, 5, 3, 14
    boxes, labels, _ = random_case(rng, batch, s, nb, c, m)
    raw = darknet_raw(rng, batch, s, nb, c)
    ours, delta, cost = parity(darknet, boxes, labels, raw, s, nb, c, **options)
    np.testing.assert_allclose(ours, delta, atol=1e-4, rtol=0)
    assert np.abs(delta).max() > 0.1          # the comparison is not vacuous
    assert cost == pytest.approx(float(np.sum(delta.astype(np.float64) ** 2)), rel=1e-4)


def test_darknet_delta_yolov1_shape_with_crowded_cells(darknet):
    # The paper's 7x7 grid, darknet's 3 boxes and 20 classes; 40 objects per
    # image so many cells hold several and darknet keeps the first.
    rng = np.random.default_rng(11)
    s, nb, c, batch, m = 7, 3, 20, 2, 40
    boxes, labels, _ = random_case(rng, batch, s, nb, c, m)
    raw = darknet_raw(rng, batch, s, nb, c)
    ours, delta, _ = parity(darknet, boxes, labels, raw, s, nb, c)
    np.testing.assert_allclose(ours, delta, atol=1e-4, rtol=0)


def test_darknet_delta_when_nothing_overlaps(darknet):
    # Tiny predicted boxes far from small truths: every IoU is 0 and darknet
    # picks the predictor by box_rmse.
    rng = np.random.default_rng(12)
    s, nb, c, batch = 3, 3, 2, 2
    raw = darknet_raw(rng, batch, s, nb, c)
    raw[..., 2:15:5] = 0.02      # t_w, t_h of every box: w = h = 0.0004
    raw[..., 3:15:5] = 0.02
    boxes = np.array([[[0.1, 0.1, 0.01, 0.01], [0.5, 0.8, 0.02, 0.01]],
                      [[0.9, 0.5, 0.01, 0.03], [0.4, 0.4, 0.01, 0.01]]], np.float32)
    labels = np.array([[0, 1], [1, 0]], np.int32)
    ours, delta, _ = parity(darknet, boxes, labels, raw, s, nb, c)
    np.testing.assert_allclose(ours, delta, atol=1e-4, rtol=0)
    # The responsible predictors are not all index 0: the fallback decided.
    coords = delta[:, s * s * (c + nb):].reshape(batch, s * s, nb, 4)
    chosen = np.argwhere(np.abs(coords).sum(-1) > 0)[:, 2]
    assert len(chosen) == 4 and set(chosen) != {0}


def test_darknet_delta_empty_batch(darknet):
    rng = np.random.default_rng(13)
    s, nb, c = 2, 2, 3
    raw = darknet_raw(rng, 2, s, nb, c)
    ours, delta, _ = parity(darknet, np.zeros((2, 3, 4), np.float32),
                            -np.ones((2, 3), np.int32), raw, s, nb, c)
    np.testing.assert_allclose(ours, delta, atol=1e-6, rtol=0)


# --- compilation, serialisation, errors ----------------------------------------

@pytest.mark.parametrize("compat", [False, True])
def test_jit_compile_matches_eager(compat):
    rng = np.random.default_rng(8)
    boxes, labels, raw = random_case(rng, batch=2, s=3, nb=2, c=3, m=6)
    loss = YoloV1Loss(3, 3, 2, darknet_compat=compat)
    y, r = gt(boxes, labels), tf.constant(raw)

    def value_and_grad(y, r):
        with tf.GradientTape() as tape:
            tape.watch(r)
            v = loss(y, r)
        return v, tape.gradient(v, r)

    eager = value_and_grad(y, r)
    compiled = tf.function(value_and_grad, jit_compile=True)(y, r)
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-5)
    np.testing.assert_allclose(compiled[1], eager[1], rtol=1e-4, atol=1e-6)
    decode = YoloV1Decode(3, 3, 2)
    out = tf.function(decode, jit_compile=True)(r)
    np.testing.assert_allclose(out["boxes"], decode(r)["boxes"], rtol=1e-6)


def test_get_config_round_trip():
    loss = YoloV1Loss(4, 5, 3, lambda_coord=2.0, darknet_compat=True,
                      object_scale=2.0, rescore=False, softmax=True)
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert isinstance(clone, YoloV1Loss)
    assert clone.get_config() == loss.get_config()
    rng = np.random.default_rng(9)
    boxes, labels, raw = random_case(rng, batch=2, s=5, nb=3, c=4, m=4)
    assert float(clone(gt(boxes, labels), raw)) == float(loss(gt(boxes, labels), raw))
    decode = YoloV1Decode(4, 5, 3, bounding_box_format="xyxy", image_shape=(64, 64),
                          parametrization="linear", softmax=True, name="d")
    clone = YoloV1Decode.from_config(decode.get_config())
    assert clone.get_config() == decode.get_config()
    np.testing.assert_allclose(clone(raw)["boxes"], decode(raw)["boxes"])


def test_float16_input_gives_finite_loss_and_gradient():
    rng = np.random.default_rng(10)
    boxes, labels, raw = random_case(rng, batch=2, s=3, nb=2, c=3, m=5, raw_scale=30)
    r = tf.constant(raw, tf.float16)
    with tf.GradientTape() as tape:
        tape.watch(r)
        v = YoloV1Loss(3, 3, 2)(gt(boxes, labels), r)
    g = tape.gradient(v, r)
    assert np.isfinite(float(v)) and np.all(np.isfinite(g.numpy()))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="darknet_compat"):
        YoloV1Loss(3, coord_scale=2.0)
    with pytest.raises(ValueError, match="image_shape"):
        YoloV1Loss(3, bounding_box_format="xyxy")
    with pytest.raises(ValueError, match="num_classes"):
        YoloV1Loss(0)
    with pytest.raises(ValueError, match="parametrization"):
        YoloV1Loss(3, darknet_compat=True, parametrization="logistic")
    with pytest.raises(ValueError, match="y_pred"):
        YoloV1Loss(3, grid_size=7, boxes_per_cell=2)(
            gt(np.zeros((1, 1, 4)), [[0]]), tf.zeros([1, 7, 7, 12]))
    with pytest.raises(ValueError, match="sqrt"):
        YoloV1Decode(3, parametrization="logistic", sqrt=False)
