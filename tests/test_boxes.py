import itertools

import numpy as np
import pytest
import tensorflow as tf
from conftest import require_peer

from keras_yolo import boxes
import references

FORMATS = boxes.FORMATS


def np_overlaps(b1, b2, variant):
    """float64 numpy IoU/GIoU/DIoU/CIoU from the papers' definitions (xyxy)."""
    b1 = np.asarray(b1, np.float64)
    b2 = np.asarray(b2, np.float64)
    w1, h1 = b1[..., 2] - b1[..., 0], b1[..., 3] - b1[..., 1]
    w2, h2 = b2[..., 2] - b2[..., 0], b2[..., 3] - b2[..., 1]
    iw = np.clip(np.minimum(b1[..., 2], b2[..., 2]) - np.maximum(b1[..., 0], b2[..., 0]), 0, None)
    ih = np.clip(np.minimum(b1[..., 3], b2[..., 3]) - np.maximum(b1[..., 1], b2[..., 1]), 0, None)
    inter = iw * ih
    union = w1 * h1 + w2 * h2 - inter
    iou = inter / union
    cw = np.maximum(b1[..., 2], b2[..., 2]) - np.minimum(b1[..., 0], b2[..., 0])
    ch = np.maximum(b1[..., 3], b2[..., 3]) - np.minimum(b1[..., 1], b2[..., 1])
    if variant == "iou":
        return iou
    if variant == "giou":
        return iou - (cw * ch - union) / (cw * ch)
    rho2 = ((b1[..., 0] + b1[..., 2]) / 2 - (b2[..., 0] + b2[..., 2]) / 2) ** 2 + (
        (b1[..., 1] + b1[..., 3]) / 2 - (b2[..., 1] + b2[..., 3]) / 2) ** 2
    diou = iou - rho2 / (cw**2 + ch**2)
    if variant == "diou":
        return diou
    v = 4 / np.pi**2 * (np.arctan(w2 / h2) - np.arctan(w1 / h1)) ** 2
    alpha = v / (1 - iou + v)
    return diou - alpha * v


def random_xyxy(rng, n, scale=100.0):
    xy = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(0.5, scale / 2, (n, 2))
    return np.concatenate([xy, xy + wh], -1)


def test_hand_computed_overlaps():
    a, b = [[0.0, 0.0, 2.0, 2.0]], [[1.0, 1.0, 3.0, 3.0]]
    # IoU = 1 / 7; enclosure 3x3 = 9, union 7 -> GIoU = 1/7 - 2/9.
    np.testing.assert_allclose(boxes.iou(a, b, "xyxy", "iou"), [1 / 7], rtol=1e-6)
    np.testing.assert_allclose(boxes.iou(a, b, "xyxy", "giou"), [1 / 7 - 2 / 9], rtol=1e-6)
    # centres (1,1) and (2,2): rho^2 = 2; diagonal^2 = 18 -> DIoU = 1/7 - 1/9; same aspect -> CIoU = DIoU.
    np.testing.assert_allclose(boxes.iou(a, b, "xyxy", "diou"), [1 / 7 - 1 / 9], rtol=1e-6)
    np.testing.assert_allclose(boxes.iou(a, b, "xyxy", "ciou"), [1 / 7 - 1 / 9], rtol=1e-6)
    # Identical boxes: every variant is 1.
    for v in ("iou", "giou", "diou", "ciou"):
        np.testing.assert_allclose(boxes.iou(a, a, "xyxy", v), [1.0], rtol=1e-6)
    # A 2x1 box inside a 2x2 box, sharing a corner: IoU 1/2, v = 4/pi^2 (atan 2 - atan 1)^2.
    c = [[0.0, 0.0, 2.0, 1.0]]
    v = 4 / np.pi**2 * (np.arctan(2.0) - np.arctan(1.0)) ** 2
    rho2, c2 = 0.5**2, 8.0
    expected = 0.5 - rho2 / c2 - v / (0.5 + v) * v
    np.testing.assert_allclose(boxes.iou(a, c, "xyxy", "ciou"), [expected], rtol=1e-5)


@pytest.mark.parametrize("variant", ["iou", "giou", "diou", "ciou"])
def test_matches_float64_reference_on_random_boxes(variant):
    rng = np.random.default_rng(0)
    b1, b2 = random_xyxy(rng, 5000), random_xyxy(rng, 5000)
    got = boxes.iou(b1.astype(np.float32), b2.astype(np.float32), "xyxy", variant).numpy()
    np.testing.assert_allclose(got, np_overlaps(b1, b2, variant), atol=2e-6)
    got64 = boxes.iou(b1, b2, "xyxy", variant).numpy()
    np.testing.assert_allclose(got64, np_overlaps(b1, b2, variant), atol=1e-7)  # EPSILON guards


def test_pairwise_equals_elementwise_on_every_pair():
    rng = np.random.default_rng(1)
    b1, b2 = random_xyxy(rng, 7), random_xyxy(rng, 5)
    got = boxes.iou(b1, b2, "xyxy", "ciou", pairwise=True).numpy()
    assert got.shape == (7, 5)
    expected = np_overlaps(b1[:, None], b2[None], "ciou")
    np.testing.assert_allclose(got, expected, atol=1e-7)


@pytest.mark.parametrize("source,target", list(itertools.permutations(FORMATS, 2)))
def test_convert_round_trips_and_matches_hand_values(source, target):
    xyxy = np.array([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 200.0, 100.0]])
    shape = (100, 200)
    expected = {
        "xyxy": xyxy,
        "yxyx": xyxy[:, [1, 0, 3, 2]],
        "xywh": np.array([[10, 20, 20, 40], [0, 0, 200, 100]], float),
        "center_xywh": np.array([[20, 40, 20, 40], [100, 50, 200, 100]], float),
    }
    scale = np.array([200, 100, 200, 100], float)
    for fmt in list(expected):
        expected["rel_" + fmt] = expected[fmt] / (scale if fmt != "yxyx" else scale[[1, 0, 3, 2]])
    got = boxes.convert(expected[source], source, target, image_shape=shape).numpy()
    np.testing.assert_allclose(got, expected[target], atol=1e-9)


def test_convert_needs_image_shape_between_pixel_and_relative():
    with pytest.raises(ValueError, match="image_shape"):
        boxes.convert([[0.0, 0.0, 1.0, 1.0]], "xyxy", "rel_xyxy")
    with pytest.raises(ValueError, match="bounding_box_format"):
        boxes.iou([[0.0, 0, 1, 1]], [[0.0, 0, 1, 1]], "xywhx")


@pytest.mark.parametrize("variant", ["iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_degenerate_boxes_give_finite_values_and_gradients_under_xla(variant, dtype):
    b1 = np.array([
        [0, 0, 0, 0],          # zero area
        [5, 5, 5, 9],          # zero width
        [1, 1, 4, 4],          # identical to its partner
        [0, 0, 1, 1],          # far apart
        [0, 0, 1e-3, 1e-3],    # tiny
    ], np.float32)
    b2 = np.array([[0, 0, 0, 0], [5, 5, 5, 9], [1, 1, 4, 4], [1e4, 1e4, 1e4 + 1, 1e4 + 2],
                   [0, 0, 2e-3, 1e-3]], np.float32)

    @tf.function(jit_compile=True)
    def value_and_grad(p, t):
        with tf.GradientTape() as tape:
            tape.watch(p)
            out = boxes.iou(p, t, "xyxy", variant)
            total = tf.reduce_sum(tf.cast(out, tf.float32))
        return out, tape.gradient(total, p)

    out, grad = value_and_grad(tf.constant(b1, dtype), tf.constant(b2, dtype))
    assert out.dtype == dtype
    assert np.all(np.isfinite(out.numpy().astype(np.float64)))
    assert np.all(np.isfinite(grad.numpy().astype(np.float64)))
    np.testing.assert_allclose(float(out[2]), 1.0, atol=1e-3)


def test_ciou_alpha_is_constant_in_the_gradient():
    p = tf.Variable([[0.1, 0.2, 3.0, 1.3]], dtype=tf.float64)  # no ties in min/max
    t = tf.constant([[0.5, 0.0, 2.5, 2.0]], tf.float64)
    with tf.GradientTape() as tape:
        out = boxes.iou(p, t, "xyxy", "ciou")
    grad = tape.gradient(out, p).numpy()

    def f(x, alpha=None):
        x1, y1, x2, y2 = x
        b1 = np.array([x1, y1, x2, y2])
        b2 = t.numpy()[0]
        diou = np_overlaps(b1, b2, "diou")
        iou = np_overlaps(b1, b2, "iou")
        w1, h1, w2, h2 = x2 - x1, y2 - y1, b2[2] - b2[0], b2[3] - b2[1]
        v = 4 / np.pi**2 * (np.arctan(w2 / h2) - np.arctan(w1 / h1)) ** 2
        a = v / (1 - iou + v) if alpha is None else alpha
        return diou - a * v, a

    x0 = p.numpy()[0]
    _, alpha0 = f(x0)
    numeric = []
    for k in range(4):
        d = np.zeros(4)
        d[k] = 1e-6
        numeric.append((f(x0 + d, alpha0)[0] - f(x0 - d, alpha0)[0]) / 2e-6)
    np.testing.assert_allclose(grad[0], numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("variant", ["iou", "giou", "diou", "ciou"])
def test_overlaps_do_not_depend_on_the_unit(variant):
    # The same boxes in pixels of a 640 image, in fractions of it, and shrunk to sub-pixel sizes:
    # every variant is scale invariant, so all must agree with the float64 formula.
    rng = np.random.default_rng(3)
    b1, b2 = random_xyxy(rng, 500, scale=4.0), random_xyxy(rng, 500, scale=4.0)
    expected = np_overlaps(b1, b2, variant)
    for unit in (1.0, 1 / 640, 1e-4, 1e4):
        got = boxes.iou((b1 * unit).astype(np.float32), (b2 * unit).astype(np.float32), "xyxy", variant)
        np.testing.assert_allclose(got, expected, atol=3e-6, err_msg=f"unit {unit}")


def test_identical_tiny_boxes_in_relative_formats_overlap_fully():
    two_pixels = np.array([[0.5, 0.5, 2 / 640, 2 / 640]], np.float32)
    for box in (two_pixels, two_pixels * [1, 1, 0.1, 0.1]):   # 2 px and 0.2 px
        for variant in ("iou", "giou", "diou", "ciou"):
            np.testing.assert_allclose(boxes.iou(box, box, "rel_center_xywh", variant), [1.0], atol=1e-6)
    # Two 2-pixel boxes overlapping by half: IoU 1/3 whatever the unit.
    a = np.array([[0.5, 0.5, 2 / 640, 2 / 640]], np.float32)
    b = a + np.array([[1 / 640, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(boxes.iou(a, b, "rel_center_xywh", "iou"), [1 / 3], rtol=1e-4)


# -- conventions: the guards of darknet and ultralytics ----------------------

def random_centre(rng, n, negative=False):
    xy = rng.uniform(0, 1, (n, 2))
    wh = rng.uniform(-0.3 if negative else 0.0, 0.5, (n, 2))
    return np.concatenate([xy, wh], -1)


def test_darknet_convention_is_darknets_box_iou_also_for_negative_sizes():
    rng = np.random.default_rng(5)
    # A linear YOLOv1 head can predict negative widths; darknet still computes.
    b1, b2 = random_centre(rng, 4000, negative=True), random_centre(rng, 4000, negative=True)
    b1[:5, 2:] = 0.0
    b2[:5] = b1[:5]  # empty unions: 0, not NaN
    got = boxes.iou(b1.astype(np.float32), b2.astype(np.float32), "rel_center_xywh", "iou",
                    convention="darknet").numpy()
    expected = references.darknet_box_iou(b1, b2)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    np.testing.assert_array_equal(got[:5], 0.0)


def test_darknet_diou_nms_criterion():
    """darknet box.c `box_diounms(a, b, beta)` on corner boxes."""
    rng = np.random.default_rng(6)
    a, b = random_xyxy(rng, 300), random_xyxy(rng, 300)
    b[0] = a[0]  # identical: c² > 0, rho = 0
    got = boxes.iou(a.astype(np.float32), b.astype(np.float32), "xyxy", "diou",
                    convention="darknet", diou_exponent=0.6).numpy()
    iou = np_overlaps(a, b, "iou")
    cw = np.maximum(a[:, 2], b[:, 2]) - np.minimum(a[:, 0], b[:, 0])
    ch = np.maximum(a[:, 3], b[:, 3]) - np.minimum(a[:, 1], b[:, 1])
    d = ((a[:, 0] + a[:, 2] - b[:, 0] - b[:, 2]) / 2) ** 2 + ((a[:, 1] + a[:, 3] - b[:, 1] - b[:, 3]) / 2) ** 2
    np.testing.assert_allclose(got, iou - (d / (cw**2 + ch**2)) ** 0.6, atol=3e-6)
    # c = 0 (two identical points): darknet returns the plain IoU, 0.
    point = np.array([[1.0, 1.0, 1.0, 1.0]], np.float32)
    assert boxes.iou(point, point, "xyxy", "diou", convention="darknet",
                     diou_exponent=0.6).numpy()[0] == 0.0


def test_darknet_convention_refuses_variants_darknet_does_not_define_here():
    with pytest.raises(ValueError, match="darknet"):
        boxes.iou([[0.0, 0, 1, 1]], [[0.0, 0, 1, 1]], "xyxy", "giou", convention="darknet")
    with pytest.raises(ValueError, match="convention"):
        boxes.iou([[0.0, 0, 1, 1]], [[0.0, 0, 1, 1]], "xyxy", "iou", convention="torch")


@pytest.mark.parametrize("variant", ["iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("xywh", [True, False])
@pytest.mark.parametrize("eps", [1e-7, 1e-3])
def test_ultralytics_convention_matches_bbox_iou(variant, xywh, eps):
    ref = require_peer("yolov5_reference").load()
    torch = ref.torch
    rng = np.random.default_rng(7)
    b1, b2 = random_xyxy(rng, 2000, scale=40.0), random_xyxy(rng, 2000, scale=40.0)
    b1[:3, 3] = b1[:3, 1]  # zero heights: the xyxy path clamps them to eps
    if xywh:
        b1 = boxes.convert(b1, "xyxy", "center_xywh").numpy()
        b2 = boxes.convert(b2, "xyxy", "center_xywh").numpy()
        b1[:3, 3] = 0.5   # ultralytics divides by a zero height there: NaN
    b1, b2 = b1.astype(np.float32), b2.astype(np.float32)
    flags = {"GIoU": variant == "giou", "DIoU": variant == "diou", "CIoU": variant == "ciou"}
    expected = ref.metrics.bbox_iou(torch.from_numpy(b1), torch.from_numpy(b2), xywh=xywh,
                                    eps=eps, **flags).numpy()[..., 0]
    got = boxes.iou(b1, b2, "center_xywh" if xywh else "xyxy", variant,
                    convention="ultralytics", eps=eps).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("convention", ["stable", "darknet", "ultralytics"])
def test_pairwise_takes_leading_batch_axes(convention):
    rng = np.random.default_rng(8)
    b1 = np.stack([random_centre(rng, 6) for _ in range(3)]).astype(np.float32)
    b2 = np.stack([random_centre(rng, 4) for _ in range(3)]).astype(np.float32)
    b1[..., 2:] += 0.01
    b2[..., 2:] += 0.01
    got = boxes.iou(b1, b2, "rel_center_xywh", "iou", pairwise=True, convention=convention)
    assert got.shape == (3, 6, 4)
    every = boxes.iou(b1[:, :, None], b2[:, None], "rel_center_xywh", "iou", convention=convention)
    np.testing.assert_array_equal(got, every)
    np.testing.assert_allclose(got, references.darknet_box_iou(b1[:, :, None].astype(np.float64),
                                                       b2[:, None].astype(np.float64)),
                               atol=1e-5)


def test_ultralytics_ciou_gradient_is_finite_for_a_zero_height():
    p = tf.Variable([[5.0, 5.0, 2.0, 0.0]])
    t = tf.constant([[5.0, 5.0, 2.0, 2.0]])
    with tf.GradientTape() as tape:
        out = boxes.iou(p, t, "center_xywh", "ciou", convention="ultralytics")
    assert np.isfinite(out.numpy()).all()
    assert np.isfinite(tape.gradient(out, p).numpy()).all()


@pytest.mark.parametrize("variant", ["iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("xywh", [True, False])
def test_ultralytics8_convention_matches_its_bbox_iou(variant, xywh):
    ref = require_peer("ultralytics8_reference").load()
    torch = ref.torch
    rng = np.random.default_rng(9)
    b1, b2 = random_xyxy(rng, 2000, scale=40.0), random_xyxy(rng, 2000, scale=40.0)
    b1[:3, 3] = b1[:3, 1]  # zero heights: ultralytics 8 adds eps to them
    if xywh:
        b1 = boxes.convert(b1, "xyxy", "center_xywh").numpy()
        b2 = boxes.convert(b2, "xyxy", "center_xywh").numpy()
        b1[:3, 3] = 0.5
    b1, b2 = b1.astype(np.float32), b2.astype(np.float32)
    flags = {"GIoU": variant == "giou", "DIoU": variant == "diou", "CIoU": variant == "ciou"}
    expected = ref.tal.bbox_iou(torch.from_numpy(b1), torch.from_numpy(b2), xywh=xywh,
                                **flags).numpy()[..., 0]
    got = boxes.iou(b1, b2, "center_xywh" if xywh else "xyxy", variant,
                    convention="ultralytics8").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
