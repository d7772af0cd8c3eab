"""YoloV4Loss against the float64 reference (`v4_reference.py`, transcribed from
AlexeyAB darknet's yolo_layer.c / box.c and the seed's formula) and against TF Model
Garden's DarknetLoss."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import v4_reference as ref
from conftest import require_peer
from keras_yolo.assign import yolo_v4 as assign_v4
from keras_yolo.losses import YoloV4Loss
from v4_cases import ANCHORS, C, GRIDS, IMAGE, STRIDES, SXY, make_case, plant, v4_loss


def tf_grads(loss, raws, truths, labels):
    preds = [tf.constant(r, tf.float32) for r in raws]
    with tf.GradientTape() as tape:
        tape.watch(preds)
        total = loss({"boxes": truths, "labels": labels}, preds)
    return total, [g.numpy() for g in tape.gradient(total, preds)]


# --- box.c's dx_box_iou against true derivatives (hand relations) -------------------
def _numeric(f, x, k, h=1e-7):
    plus, minus = list(x), list(x)
    plus[k] += h
    minus[k] -= h
    return (f(plus) - f(minus)) / (2 * h)


def test_dx_box_iou_relations_to_the_true_ciou_derivative():
    """Inside the truth: dx, dy are dCIoU/d(x, y); dw is twice dIoU/dw plus the
    aspect term times (w² + h²). Sticking out on the right: the enclosing-box
    part of dx has the opposite sign, dx = dCIoU/dx - 4 C_w rho² / c^4."""
    from keras_yolo.losses.yolo_v4 import darknet_dx_box_iou

    truth = [0.5, 0.45, 0.4, 0.3]

    def aspect(b):
        return 4 / math.pi**2 * (math.atan(truth[2] / truth[3]) - math.atan(b[2] / b[3])) ** 2

    def ciou_fixed_alpha(b, alpha):
        return ref.ciou(b, truth, "diou")[0] - alpha * aspect(b)

    for pred, inside in (([0.52, 0.44, 0.2, 0.22], True), ([0.62, 0.46, 0.3, 0.2], False)):
        got = darknet_dx_box_iou(tf.constant([pred], tf.float64), tf.constant([truth], tf.float64),
                                 "ciou").numpy()[0]
        _, alpha = ref.ciou(pred, truth, "ciou")
        dx = _numeric(lambda b: ciou_fixed_alpha(b, alpha), pred, 0)
        dy = _numeric(lambda b: ciou_fixed_alpha(b, alpha), pred, 1)
        diou_dw = _numeric(lambda b: ref.ciou(b, truth, "iou")[0], pred, 2)
        dv_dw = _numeric(aspect, pred, 2)
        want_dw = 2 * diou_dw - (pred[2] ** 2 + pred[3] ** 2) * alpha * dv_dw
        if inside:
            np.testing.assert_allclose(got[:3], [dx, dy, want_dw], rtol=1e-5, atol=1e-8)
        else:
            left = min(pred[0] - pred[2] / 2, truth[0] - truth[2] / 2)
            right = max(pred[0] + pred[2] / 2, truth[0] + truth[2] / 2)
            top = min(pred[1] - pred[3] / 2, truth[1] - truth[3] / 2)
            bottom = max(pred[1] + pred[3] / 2, truth[1] + truth[3] / 2)
            cw, c2 = right - left, (right - left) ** 2 + (bottom - top) ** 2
            rho2 = (pred[0] - truth[0]) ** 2 + (pred[1] - truth[1]) ** 2
            np.testing.assert_allclose(got[0], dx - 4 * cw * rho2 / c2**2, rtol=1e-5, atol=1e-8)


# --- darknet_compat: -dL/draw == delta / B -----------------------------------------
@pytest.mark.parametrize("iou_loss", ["ciou", "diou", "giou", "iou"])
def test_darknet_gradient_is_yolo_layer_delta_over_batch(iou_loss):
    raws, truths, labels = make_case(4)
    deltas, stats = ref.darknet_deltas(raws, truths, labels, ANCHORS, STRIDES, SXY,
                                       iou_loss=iou_loss)
    assert stats["pairs"] >= 20 and stats["shared"] >= 2
    _, grads = tf_grads(v4_loss(iou_loss=iou_loss, darknet_compat=True), raws,
                        truths, labels)
    batch = truths.shape[0]
    for level in range(3):
        np.testing.assert_allclose(-grads[level] * batch, deltas[level], atol=2e-5)
    # The empty image still gets its no-object push on every anchor.
    assert np.all(deltas[0][-1, ..., 4] < 0)


def test_darknet_max_delta_clips_each_truth_before_summing():
    raws, truths, labels = make_case(5)
    raws[0][..., 2:4] += 1.5  # large predicted boxes: large w, h deltas
    kwargs = dict(iou_normalizer=1.0, max_delta=0.05, iou_thresh=0.213)
    deltas, _ = ref.darknet_deltas(raws, truths, labels, ANCHORS, STRIDES, SXY, **kwargs)
    loss = v4_loss(darknet_compat=True, **kwargs)
    _, grads = tf_grads(loss, raws, truths, labels)
    clipped = np.isclose(np.abs(deltas[0][..., 0:4]), 0.05).sum()
    assert clipped >= 5
    for level in range(3):
        np.testing.assert_allclose(-grads[level] * truths.shape[0], deltas[level], atol=2e-5)


def test_darknet_label_smoothing_counts_negative_classes_below_eps_half():
    raws, truths, labels = make_case(6)
    for r in raws:
        r[..., 5:] -= 2.5  # some negative classes fall below eps / 2
    deltas, _ = ref.darknet_deltas(raws, truths, labels, ANCHORS, STRIDES, SXY,
                                   label_smooth_eps=0.2)
    loss = v4_loss(darknet_compat=True, label_smooth_eps=0.2)
    assert loss.label_smoothing == 0.2
    _, grads = tf_grads(loss, raws, truths, labels)
    for level in range(3):
        np.testing.assert_allclose(-grads[level] * truths.shape[0], deltas[level], atol=2e-5)


def test_two_truths_in_one_anchor_sum_and_divide_by_their_classes():
    raws, _, _ = make_case(7)
    truth = [0.41, 0.43, 0.2, 0.22]
    boxes = np.array([[truth, truth]], np.float32)
    raws = [r[:1] for r in raws]
    loss = v4_loss(darknet_compat=True)

    def box_grad(labels):
        _, g = tf_grads(loss, raws, boxes, np.array([labels], np.int32))
        return [x[..., 0:4] for x in g]

    single = box_grad([0, -1])
    for two, divisor in (([0, 1], 2.0), ([1, 1], 1.0)):
        for level, got in enumerate(box_grad(two)):
            np.testing.assert_allclose(got, 2 * single[level] / divisor, atol=1e-6)


def test_darknet_ignore_rule_needs_a_confident_class():
    raws, truths, labels = make_case(8)
    raws = [r[:1] for r in raws]
    truths, labels = truths[:1, :1], labels[:1, :1]
    truth = truths[0, 0]
    mask = assign_v4.assign(truths, labels >= 0, ANCHORS, [(g, g) for g in GRIDS],
                            (IMAGE, IMAGE), 0.213)["mask"].numpy()[0, 0]
    level, anchor = [(l, a) for l in range(3) for a in range(3) if not mask[l, a]][0]
    j, i = plant(raws, truth, level, anchor)
    for class_logit, exempt in ((-4.0, False), (0.5, True)):
        raws[level][0, j, i, anchor, 5:] = class_logit
        obj = raws[level][0, j, i, anchor, 4]
        for compat in (True, False):
            _, grads = tf_grads(v4_loss(darknet_compat=compat), raws, truths, labels)
            got = grads[level][0, j, i, anchor, 4]
            # The seed's ignore rule has no class gate.
            want = 0.0 if (exempt or not compat) else ref.sigmoid(obj)
            np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("compat", [False, True])
def test_empty_images_only_push_objectness_down(compat):
    raws, truths, _ = make_case(9)
    labels = np.full(truths.shape[:2], -1, np.int32)
    loss = v4_loss(darknet_compat=compat)
    parts = loss.components({"boxes": truths, "labels": labels},
                            [tf.constant(r, tf.float32) for r in raws])
    batch = truths.shape[0]
    want_obj = sum(np.sum(np.logaddexp(0, r[..., 4])) for r in raws) / batch
    assert float(parts["box"]) == 0.0 and float(parts["cls"]) == 0.0
    np.testing.assert_allclose(float(parts["obj"]), want_obj, rtol=1e-5)
    _, grads = tf_grads(loss, raws, truths, labels)
    for g, r in zip(grads, raws):
        np.testing.assert_allclose(g[..., 4], ref.sigmoid(r[..., 4]) / batch, atol=1e-6)
        assert np.all(g[..., :4] == 0) and np.all(g[..., 5:] == 0)


# --- the seed's formula ------------------------------------------------------------
@pytest.mark.parametrize("iou_loss,eps", [("ciou", 0.0), ("giou", 0.1), ("diou", 0.0)])
def test_seed_loss_matches_reference(iou_loss, eps):
    raws, truths, labels = make_case(10)
    loss = v4_loss(iou_loss=iou_loss, label_smoothing=eps, lambda_class=0.5)
    parts = loss.components({"boxes": truths, "labels": labels},
                            [tf.constant(r, tf.float32) for r in raws])
    want = ref.seed_loss(raws, truths.astype(np.float64), labels, ANCHORS, STRIDES, SXY,
                         iou_loss=iou_loss, label_smoothing=eps, lambda_class=0.5)
    for key in ("box", "obj", "cls"):
        np.testing.assert_allclose(float(parts[key]), want[key], rtol=1e-5)
    assert want["box"] > 0.1


def test_seed_gradient_matches_finite_differences_of_reference():
    raws, truths, labels = make_case(11, batch=2)
    _, grads = tf_grads(v4_loss(), raws, truths, labels)
    t64 = truths.astype(np.float64)

    alphas = {}  # CIoU's alpha is a constant in the gradient (CIoU paper)

    def total(rs):
        return sum(ref.seed_loss(rs, t64, labels, ANCHORS, STRIDES, SXY,
                                 alphas=alphas).values())

    total(raws)

    rng = np.random.default_rng(0)
    positives = [(l, tuple(p)) for l in range(3)  # box entries of positives
                 for p in np.argwhere(np.abs(grads[l][..., 0]) > 1e-4)[:3]]
    picks = [(l, p, ch) for l, p in positives for ch in range(4)]
    picks += [(l, tuple(rng.integers(0, s) for s in raws[l].shape[:4]), ch)
              for l in range(3) for ch in (4, 5)]
    h = 1e-6
    for level, index, ch in picks:
        plus = [r.copy() for r in raws]
        minus = [r.copy() for r in raws]
        plus[level][index + (ch,)] += h
        minus[level][index + (ch,)] -= h
        numeric = (total(plus) - total(minus)) / (2 * h)
        np.testing.assert_allclose(grads[level][index + (ch,)], numeric, atol=1e-5,
                                   err_msg=f"level {level} {index} channel {ch}")
    assert len(positives) >= 6


# --- graph, serialization, errors --------------------------------------------------
@pytest.mark.parametrize("compat", [False, True])
def test_jit_compile_matches_eager(compat):
    """Two levels (P3, P4) keep the XLA compile short; the levels share code."""
    raws, truths, labels = make_case(12)
    raws = raws[:2]
    loss = YoloV4Loss(num_classes=C, anchors=ANCHORS[:2], strides=STRIDES[:2],
                      scale_x_y=SXY[:2], darknet_compat=compat)
    total, grads = tf_grads(loss, raws, truths, labels)

    @tf.function(jit_compile=True)
    def step(y, preds):
        with tf.GradientTape() as tape:
            tape.watch(preds)
            value = loss(y, preds)
        return value, tape.gradient(value, preds)

    value, jit_grads = step({"boxes": tf.constant(truths), "labels": tf.constant(labels)},
                            [tf.constant(r, tf.float32) for r in raws])
    np.testing.assert_allclose(float(value), float(total), rtol=1e-5)
    for g, jg in zip(grads, jit_grads):
        np.testing.assert_allclose(jg, g, atol=1e-5)
    assert float(total) > 0


def test_one_loss_serves_any_input_size():
    """Multi-scale training: grid sizes are read from the tensors, also when
    they are unknown while tracing."""
    loss = v4_loss(darknet_compat=True)
    spec = [tf.TensorSpec((None, None, None, 3, 5 + C), tf.float32)] * 3
    y_spec = {"boxes": tf.TensorSpec((None, None, 4), tf.float32),
              "labels": tf.TensorSpec((None, None), tf.int32)}
    dynamic = tf.function(lambda y, p: loss(y, p), input_signature=[y_spec, spec])
    for seed, scale in ((19, 1), (20, 2)):
        raws, truths, labels = make_case(seed)
        raws = [np.repeat(np.repeat(r, scale, 1), scale, 2) for r in raws]
        y = {"boxes": truths, "labels": labels}
        want = loss(y, [tf.constant(r, tf.float32) for r in raws])
        np.testing.assert_allclose(float(dynamic(y, [tf.constant(r, tf.float32) for r in raws])),
                                   float(want), rtol=1e-5)


def test_components_sum_and_pixel_boxes():
    raws, truths, labels = make_case(13)
    preds = [tf.constant(r, tf.float32) for r in raws]
    loss = v4_loss()
    parts = loss.components({"boxes": truths, "labels": labels}, preds)
    total = loss({"boxes": truths, "labels": labels}, preds)
    np.testing.assert_allclose(float(total), float(sum(parts.values())), rtol=1e-6)
    xyxy = np.concatenate([truths[..., :2] - truths[..., 2:] / 2,
                           truths[..., :2] + truths[..., 2:] / 2], -1) * IMAGE
    pixel = v4_loss(bounding_box_format="xyxy")({"boxes": xyxy, "labels": labels}, preds)
    np.testing.assert_allclose(float(pixel), float(total), rtol=1e-5)


def test_get_config_round_trip_with_darknet_aliases():
    loss = v4_loss(iou_normalizer=0.5, cls_normalizer=0.7, obj_normalizer=2.0,
                   iou_loss="giou", darknet_compat=True, max_delta=3.0)
    assert (loss.lambda_coord, loss.lambda_class, loss.lambda_obj) == (0.5, 0.7, 2.0)
    config = loss.get_config()
    clone = YoloV4Loss.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, YoloV4Loss) and restored.get_config() == config
    defaults = YoloV4Loss(num_classes=80)
    assert (defaults.lambda_coord, defaults.iou_thresh, defaults.ignore_thresh,
            defaults.scale_x_y, defaults.max_delta, defaults.iou_loss) == (
        0.07, 0.213, 0.7, (1.2, 1.1, 1.05), 5.0, "ciou")


@pytest.mark.parametrize("kwargs,match", [
    (dict(iou_loss="eiou"), "iou_loss"),
    (dict(lambda_coord=1.0, iou_normalizer=2.0), "iou_normalizer"),
    (dict(scale_x_y=(1.2, 1.1)), "scale_x_y"),
    (dict(ignore_thresh=1.5), "ignore_thresh"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(bounding_box_format="cxcywh"), "bounding_box_format"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        v4_loss(**kwargs)


def test_wrong_head_shape_is_named():
    raws, truths, labels = make_case(14)
    with pytest.raises(ValueError, match=r"y_pred\[1\]"):
        v4_loss()({"boxes": truths, "labels": labels},
                  [raws[0], raws[1][..., :-1], raws[2]])


# --- TF Model Garden (official.projects.yolo.losses.yolo_loss.DarknetLoss) ----------
def model_garden_gradients(raws, truths, labels, update_on_repeat=True):
    """DarknetLoss per level and image, fed with our assignment (Model Garden
    assigns in its data pipeline) and its darknet options:
    objectness_smooth=0, box_type='original', truth_thresh=1, no clipping.
    One image at a time so that no truth row is padded (eager CPU rejects the
    -1 scatter index Model Garden gives padded rows); its batch mean then
    needs the 1 / B of ours."""
    yolo_loss = require_peer("official.projects.yolo.losses.yolo_loss",
                             "(bash .ci/install_parity)")
    batch, m = labels.shape
    valid = labels >= 0
    out = assign_v4.assign(truths, valid, ANCHORS, [(g, g) for g in GRIDS],
                           (IMAGE, IMAGE), 0.213)
    mask, cells = out["mask"].numpy(), out["cells"].numpy()
    # PairWiseSearch (the ignore rule) searches tiles of 50 truths and skips
    # all of them below 100 rows: pad to 100.
    rows = 100
    t = truths
    yxyx = np.zeros((batch, rows, 4), np.float32)
    yxyx[:, :m] = np.stack([t[..., 1] - t[..., 3] / 2, t[..., 0] - t[..., 2] / 2,
                            t[..., 1] + t[..., 3] / 2, t[..., 0] + t[..., 2] / 2],
                           -1) * valid[..., None]
    classes = np.zeros((batch, rows), np.float32)
    classes[:, :m] = np.where(valid, labels, 0)
    grads = [np.zeros_like(r, np.float32) for r in raws]
    for level, raw in enumerate(raws):
        loss = yolo_loss.DarknetLoss(
            classes=C, anchors=ANCHORS[level], path_stride=STRIDES[level],
            ignore_thresh=0.7, truth_thresh=1.0, loss_type="ciou",
            iou_normalizer=0.07, cls_normalizer=1.0, object_normalizer=1.0,
            label_smoothing=0.0, objectness_smooth=0.0,
            update_on_repeat=update_on_repeat, box_type="original",
            scale_x_y=SXY[level], max_delta=1e9)
        for b in range(batch):
            inds, y_true = [], []
            counts = np.zeros((1,) + raw.shape[1:4] + (1,), np.float32)
            for t_, a in zip(*np.nonzero(mask[b, :, level])):
                j, i = cells[b, t_, level]
                inds.append((j, i, a))
                y_true.append((*truths[b, t_], 1, labels[b, t_]))
                counts[0, j, i, a, 0] += 1
            x = tf.constant(raw[b:b + 1], tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss(tf.constant(counts),
                             tf.constant(np.reshape(inds, (1, -1, 3)), tf.int32),
                             tf.constant(np.reshape(y_true, (1, -1, 6)), tf.float32),
                             tf.constant(yxyx[b:b + 1]), tf.constant(classes[b:b + 1]),
                             x)[0]
            grads[level][b] = tape.gradient(value, x).numpy()[0] / batch
    return grads


@pytest.mark.parity
def test_model_garden_objectness_and_class_gradients():
    raws, truths, labels = make_case(15)
    mg = model_garden_gradients(raws, truths, labels)
    _, ours = tf_grads(v4_loss(darknet_compat=True), raws, truths, labels)
    ignored = 0
    for level in range(3):
        np.testing.assert_allclose(ours[level][..., 4:], mg[level][..., 4:], atol=1e-5)
        ignored += np.sum(mg[level][..., 4] == 0)
    assert ignored >= 4  # the planted, class-confident predictions


@pytest.mark.parity
def test_model_garden_xy_gradients_when_prediction_inside_truth():
    """Model Garden differentiates CIoU; darknet's dx_box_iou equals that
    derivative for x, y when the predicted box lies inside its truth (no
    enclosing-box term). w, h differ by design: see losses/yolo_v4.py."""
    rng = np.random.default_rng(16)
    raws = [rng.normal(0, 1, (2, g, g, 3, 5 + C)) for g in GRIDS]
    truths = np.array([[[0.3, 0.3, 0.45, 0.4], [0.72, 0.7, 0.3, 0.5]],
                       [[0.55, 0.35, 0.6, 0.5], [0.2, 0.8, 0.25, 0.3]]], np.float32)
    labels = np.array([[0, 2], [1, 0]], np.int32)
    out = assign_v4.assign(truths, labels >= 0, ANCHORS, [(g, g) for g in GRIDS],
                           (IMAGE, IMAGE), 0.213)["mask"].numpy()
    for b in range(2):
        for t in range(2):
            for level in range(3):
                for a in range(3):
                    if out[b, t, level, a]:
                        shrunk = truths[b, t] + [0.01, -0.01, 0, 0]
                        plant([r[b:b + 1] for r in raws], shrunk, level, a, grow=0.6)
    mg = model_garden_gradients(raws, truths, labels)
    _, ours = tf_grads(v4_loss(darknet_compat=True), raws, truths, labels)
    checked = 0
    for level in range(3):
        np.testing.assert_allclose(ours[level][..., 0:2], mg[level][..., 0:2], atol=1e-5)
        checked += np.sum(np.abs(mg[level][..., 0]) > 1e-4)
    assert checked >= 4
