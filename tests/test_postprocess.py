"""non_max_suppression against yolov5's NMS, and DIoU-NMS against a numpy
port of AlexeyAB darknet's `diounms_sort`."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import require_peer

import keras
from keras_yolo import boxes as box_ops
from keras_yolo.layers import YoloV5Decode
from keras_yolo.postprocess import NonMaxSuppression, non_max_suppression


def _decoded(image_hw=(640, 640), batch=2, num_classes=80, seed=0,
             obj_bias=-3.0):
    """A decode layer's output for random raw outputs."""
    rng = np.random.default_rng(seed)
    raw = []
    for s in (8, 16, 32):
        p = rng.normal(0, 1.5, (batch, image_hw[0] // s, image_hw[1] // s, 3,
                                5 + num_classes)).astype(np.float32)
        p[..., 4] += obj_bias
        p[..., 2:4] *= 0.5
        raw.append(p)
    out = YoloV5Decode()(raw)
    return {k: v.numpy() for k, v in out.items()}


def _clusters(num_clusters=6, per_cluster=7, num_classes=3, seed=0):
    """Crafted overlapping clusters: jittered copies of a few boxes, some
    shifted along one axis (high IoU, distant centres), one image."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_clusters):
        cx, cy = rng.uniform(50, 450, 2)
        w, h = rng.uniform(20, 120, 2)
        for k in range(per_cluster):
            if k % 3 == 2:  # stretched along y: IoU ~0.5, centre moved
                rows.append([cx, cy + h * rng.uniform(0.3, 0.6), w,
                             h * rng.uniform(1.5, 2.2)])
            else:
                rows.append([cx + rng.normal(0, w * 0.08),
                             cy + rng.normal(0, h * 0.08),
                             w * rng.uniform(0.85, 1.15),
                             h * rng.uniform(0.85, 1.15)])
    n = len(rows)
    return {
        "boxes": np.asarray(rows, np.float32)[None],
        "objectness": rng.uniform(0.3, 1.0, (1, n)).astype(np.float32),
        "class_probs": rng.uniform(0.0, 1.0, (1, n, num_classes)).astype(
            np.float32),
    }


def _numpy_greedy(xyxy, scores, classes, iou_thres, method, beta, agnostic):
    """Greedy NMS in float64, written from torchvision's and darknet's loops:
    visit boxes by decreasing score; each box not yet suppressed is kept and
    suppresses the later boxes (of its class unless agnostic) whose overlap
    exceeds `iou_thres`.

    darknet `box_diounms`: `iou - ((dx² + dy²) / (cw² + ch²))^beta`, the
    plain IoU when the enclosing box has no diagonal."""
    xyxy = xyxy.astype(np.float64)
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    suppressed = np.zeros(len(scores), bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        a, b = xyxy[i], xyxy[rest]
        iw = np.maximum(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]),
                        0)
        ih = np.maximum(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]),
                        0)
        inter = iw * ih
        union = ((a[2] - a[0]) * (a[3] - a[1])
                 + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter)
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1),
                           0.0)
        if method == "diou":
            cw = np.maximum(a[2], b[:, 2]) - np.minimum(a[0], b[:, 0])
            ch = np.maximum(a[3], b[:, 3]) - np.minimum(a[1], b[:, 1])
            c2 = cw * cw + ch * ch
            d2 = (((a[0] + a[2]) - (b[:, 0] + b[:, 2])) / 2) ** 2 + (
                ((a[1] + a[3]) - (b[:, 1] + b[:, 3])) / 2) ** 2
            ratio = np.where(c2 > 0, d2 / np.where(c2 > 0, c2, 1), 0.0)
            overlap = np.where(c2 > 0, overlap - ratio ** beta, overlap)
        hit = overlap > iou_thres
        if not agnostic:
            hit &= classes[rest] == classes[i]
        suppressed[rest[hit]] = True
    return np.asarray(keep, np.int64)


def _numpy_nms(pred, conf_thres, iou_thres, method="iou", beta=0.6,
               agnostic=False, multi_label=False, max_det=300):
    """Per image: candidates as ultralytics, then `_numpy_greedy`."""
    results = []
    for b in range(pred["boxes"].shape[0]):
        obj = pred["objectness"][b]
        scores = pred["class_probs"][b] * obj[:, None]
        xyxy = box_ops.convert(pred["boxes"][b], "center_xywh",
                               "xyxy").numpy()
        cand = obj > conf_thres
        if multi_label:
            i, j = np.nonzero(cand[:, None] & (scores > conf_thres))
            s = scores[i, j]
        else:
            j_all = scores.argmax(1)
            s_all = scores.max(1)
            i = np.nonzero(cand & (s_all > conf_thres))[0]
            j, s = j_all[i], s_all[i]
        keep = _numpy_greedy(xyxy[i], s, j, iou_thres, method, beta,
                             agnostic)[:max_det]
        results.append((xyxy[i][keep], s[keep], j[keep]))
    return results


def _assert_same(ours, expected):
    for b, (boxes, scores, classes) in enumerate(expected):
        n = int(ours["num_detections"][b])
        assert n == len(scores), (b, n, len(scores))
        got = box_ops.convert(ours["boxes"][b, :n], "center_xywh",
                              "xyxy").numpy()
        np.testing.assert_allclose(got, boxes, rtol=1e-6, atol=1e-3)
        np.testing.assert_allclose(ours["scores"][b, :n], scores, rtol=1e-6)
        np.testing.assert_array_equal(ours["classes"][b, :n], classes)
        assert np.all(ours["scores"][b, n:] == -1)
        assert np.all(ours["classes"][b, n:] == -1)
        assert np.all(ours["boxes"][b, n:] == -1)


NMS_CASES = {
    "default": dict(conf_thres=0.25, iou_thres=0.45),
    "map_eval": dict(conf_thres=0.001, iou_thres=0.6, max_det=300),
    "agnostic": dict(conf_thres=0.1, iou_thres=0.45, agnostic=True),
    "multi_label": dict(conf_thres=0.1, iou_thres=0.5, multi_label=True),
    "few": dict(conf_thres=0.05, iou_thres=0.3, max_det=7),
    "classes": dict(conf_thres=0.05, iou_thres=0.45, classes=[0, 3, 17]),
}


# A 640 input where few boxes pass conf_thres; low thresholds on a smaller,
# non-square input (the reference NMS runs in Python here).
IMAGE_HW = {"default": (640, 640), "agnostic": (640, 640),
            "multi_label": (640, 640)}


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(NMS_CASES))
def test_matches_yolov5_non_max_suppression(case):
    reference = require_peer("yolov5_reference", "(bash .ci/install_parity)")
    torch = reference.load().torch
    kwargs = NMS_CASES[case]
    image_hw = IMAGE_HW.get(case, (192, 256))
    pred = _decoded(image_hw, obj_bias=-6.0 if image_hw[0] == 640 else -2.0)
    prediction = torch.tensor(np.concatenate(
        [pred["boxes"], pred["objectness"][..., None], pred["class_probs"]],
        -1))
    ref = reference.reference_nms(prediction, **kwargs)
    ours = non_max_suppression(
        {k: tf.constant(v) for k, v in pred.items()},
        bounding_box_format="center_xywh", **kwargs)
    expected = [(r[:, :4].numpy(), r[:, 4].numpy(),
                 r[:, 5].numpy().astype(np.int64)) for r in ref]
    assert sum(len(e[1]) for e in expected) > 0
    _assert_same(ours, expected)


@pytest.mark.parametrize("multi_label", [False, True])
def test_iou_nms_matches_numpy_greedy(multi_label):
    pred = _decoded(image_hw=(128, 192), num_classes=4, seed=3,
                    obj_bias=-1.0)
    kwargs = dict(conf_thres=0.2, iou_thres=0.4, multi_label=multi_label)
    ours = non_max_suppression({k: tf.constant(v) for k, v in pred.items()},
                               **kwargs)
    _assert_same(ours, _numpy_nms(pred, **kwargs))


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("beta", [0.6, 1.0])
def test_diou_nms_matches_darknet_port_on_clusters(agnostic, beta):
    pred = _clusters()
    kwargs = dict(conf_thres=0.05, iou_thres=0.45, agnostic=agnostic,
                  multi_label=True)
    ours = non_max_suppression({k: tf.constant(v) for k, v in pred.items()},
                               method="diou", beta=beta, **kwargs)
    expected = _numpy_nms(pred, method="diou", beta=beta, **kwargs)
    _assert_same(ours, expected)
    # The clusters are built so the centre penalty matters.
    plain = _numpy_nms(pred, method="iou", **kwargs)
    assert (len(expected[0][1]) != len(plain[0][1])
            or not np.array_equal(expected[0][1], plain[0][1]))


def test_diou_keeps_a_high_iou_box_with_a_distant_centre():
    """IoU 0.5 > 0.45, but rho²/c² = 25/500 -> 0.5 - 0.05^0.6 = 0.334."""
    pred = {
        "boxes": np.array([[[5, 5, 10, 10], [5, 10, 10, 20]]], np.float32),
        "objectness": np.array([[0.9, 0.8]], np.float32),
        "class_probs": np.ones((1, 2, 1), np.float32),
    }
    pred = {k: tf.constant(v) for k, v in pred.items()}
    iou = non_max_suppression(pred, iou_thres=0.45)
    diou = non_max_suppression(pred, iou_thres=0.45, method="diou")
    assert int(iou["num_detections"][0]) == 1
    assert int(diou["num_detections"][0]) == 2
    np.testing.assert_allclose(diou["scores"][0, :2], [0.9, 0.8])


def test_objectness_gates_candidates_before_scores():
    """A box below conf_thres in objectness never enters NMS, so it cannot
    suppress a lower-scoring neighbour."""
    pred = {
        "boxes": np.array([[[50, 50, 20, 20], [51, 50, 20, 20]]], np.float32),
        "objectness": np.array([[0.2, 0.9]], np.float32),
        "class_probs": np.array([[[1.0], [0.3]]], np.float32),
    }
    out = non_max_suppression({k: tf.constant(v) for k, v in pred.items()},
                              conf_thres=0.25)
    assert int(out["num_detections"][0]) == 1
    np.testing.assert_allclose(out["scores"][0, 0], 0.27, rtol=1e-6)


@pytest.mark.parametrize("method", ["iou", "diou"])
def test_jit_compile_matches_eager(method):
    pred = {k: tf.constant(v) for k, v in _decoded(
        image_hw=(64, 96), num_classes=3, seed=5, obj_bias=0.0).items()}
    kwargs = dict(conf_thres=0.1, iou_thres=0.45, max_det=50,
                  max_candidates=200, method=method)
    eager = non_max_suppression(pred, **kwargs)
    jitted = tf.function(lambda p: non_max_suppression(p, **kwargs),
                         jit_compile=True)(pred)
    for key in eager:
        np.testing.assert_allclose(jitted[key].numpy(), eager[key].numpy(),
                                   rtol=1e-6)
    assert int(eager["num_detections"][0]) > 0


def test_layer_round_trip_and_output():
    layer = NonMaxSuppression(conf_thres=0.1, iou_thres=0.5, max_det=20,
                              classes=[0, 2], method="diou", beta=0.8,
                              bounding_box_format="center_xywh")
    clone = NonMaxSuppression.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert restored.get_config() == layer.get_config()
    pred = {k: tf.constant(v) for k, v in _decoded(
        image_hw=(64, 64), num_classes=3, seed=2, obj_bias=0.0).items()}
    out = clone(pred)
    assert out["boxes"].shape == (2, 20, 4)
    assert out["classes"].dtype == tf.int32
    np.testing.assert_array_equal(
        out["classes"].numpy(),
        non_max_suppression(pred, conf_thres=0.1, iou_thres=0.5, max_det=20,
                            classes=[0, 2], method="diou",
                            beta=0.8)["classes"].numpy())
    assert set(np.unique(out["classes"].numpy())) <= {-1, 0, 2}


@pytest.mark.parametrize("kwargs, word", [
    (dict(conf_thres=1.5), "conf_thres"),
    (dict(iou_thres=-0.1), "iou_thres"),
    (dict(method="soft"), "method"),
    (dict(max_det=0), "max_det"),
    (dict(bounding_box_format="cxcywh"), "bounding_box_format"),
])
def test_bad_arguments_are_named(kwargs, word):
    pred = {k: tf.constant(v) for k, v in _clusters().items()}
    with pytest.raises(ValueError, match=word):
        non_max_suppression(pred, **kwargs)


def test_missing_keys_are_named():
    with pytest.raises(ValueError, match="objectness"):
        non_max_suppression({"boxes": tf.zeros((1, 2, 4))})


def test_detections_are_clipped_to_the_image_when_its_size_is_given():
    from keras_yolo.postprocess import NonMaxSuppression, clip_boxes

    np.testing.assert_allclose(clip_boxes([[-5.0, 10.0, 700.0, 90.0]], "xyxy", (480, 640)),
                               [[0.0, 10.0, 640.0, 90.0]])
    # A centre box half outside a 640 x 480 image: x 600..700 -> 600..640, y -20..20 -> 0..20.
    np.testing.assert_allclose(clip_boxes([[650.0, 0.0, 100.0, 40.0]], "center_xywh", (480, 640)),
                               [[620.0, 10.0, 40.0, 20.0]])
    decoded = {"boxes": tf.constant([[[1.1, 0.5, 0.4, 0.2], [0.2, 0.2, 0.1, 0.1]]]),
               "objectness": tf.constant([[0.9, 0.8]]), "class_probs": tf.constant([[[1.0], [1.0]]])}
    plain = non_max_suppression(decoded, bounding_box_format="rel_center_xywh")
    np.testing.assert_allclose(plain["boxes"][0, 0], [1.1, 0.5, 0.4, 0.2], rtol=1e-6)  # ultralytics: unclipped
    layer = NonMaxSuppression(bounding_box_format="rel_center_xywh", image_shape=(1, 1))
    layer = NonMaxSuppression.from_config(layer.get_config())
    clipped = layer(decoded)
    np.testing.assert_allclose(clipped["boxes"][0, 0], [0.95, 0.5, 0.1, 0.2], rtol=1e-6)   # x 0.9..1.0
    np.testing.assert_allclose(clipped["boxes"][0, 1], [0.2, 0.2, 0.1, 0.1], rtol=1e-6)
