"""YoloV8Decode against ultralytics 8.4.190 `Detect` (eval mode) and by hand;
the shared NMS on its output against ultralytics 8's `non_max_suppression`."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import require_peer

import keras
from keras_yolo import boxes as box_ops
from keras_yolo.layers.yolo_v8_decode import YoloV8Decode
from keras_yolo.postprocess import non_max_suppression
from yolo_v8_inputs import REG_MAX, STRIDES, random_levels


def _to_levels(flat, level_hw):
    """`(B, ch, N)` channel-major (ultralytics) -> our `(B, H, W, ch)`."""
    flat = flat.transpose(0, 2, 1)
    out, start = [], 0
    for h, w in level_hw:
        out.append(flat[:, start:start + h * w].reshape(
            flat.shape[0], h, w, flat.shape[-1]))
        start += h * w
    return out


@pytest.mark.parity
@pytest.mark.parametrize("image_hw, num_classes", [((64, 96), 5),
                                                   ((128, 128), 1)])
def test_matches_ultralytics_detect_in_eval_mode(image_hw, num_classes):
    reference = require_peer("ultralytics8_reference",
                             "(bash .ci/install_parity)")
    torch = reference.load().torch
    torch.manual_seed(0)
    detect = reference.detect_head(num_classes, REG_MAX, STRIDES).eval()
    level_hw = [(image_hw[0] // s, image_hw[1] // s) for s in STRIDES]
    feats = [torch.randn(2, 16, h, w) for h, w in level_hw]
    with torch.no_grad():
        y, raw = detect(feats)
    flat = torch.cat([raw["boxes"], raw["scores"]], 1).numpy()
    levels = _to_levels(flat, level_hw)
    out = YoloV8Decode(num_classes=num_classes)(levels)
    y = y.numpy().transpose(0, 2, 1)  # (B, N, 4 + C): xywh px, probs
    np.testing.assert_allclose(out["boxes"].numpy(), y[..., :4], rtol=1e-5,
                               atol=1e-4)
    np.testing.assert_allclose(out["class_probs"].numpy(), y[..., 4:],
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out["objectness"].numpy(), 1.0)


NMS_CASES = {
    "default": dict(conf_thres=0.25, iou_thres=0.45),
    "map_eval": dict(conf_thres=0.001, iou_thres=0.7, max_det=300),
    "agnostic": dict(conf_thres=0.1, iou_thres=0.45, agnostic=True),
    "multi_label": dict(conf_thres=0.1, iou_thres=0.5, multi_label=True),
    "few": dict(conf_thres=0.05, iou_thres=0.3, max_det=7),
    "classes": dict(conf_thres=0.05, iou_thres=0.45, classes=[0, 3]),
}


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(NMS_CASES))
def test_nms_matches_ultralytics_non_max_suppression(case):
    """Score = class probability (no objectness): the shared NMS on
    YoloV8Decode's output (objectness ones) equals ultralytics 8's."""
    reference = require_peer("ultralytics8_reference",
                             "(bash .ci/install_parity)")
    torch = reference.load().torch
    kwargs = NMS_CASES[case]
    num_classes = 6
    raw = random_levels(np.random.default_rng(1), 2, (192, 256), num_classes,
               cls_bias=-1.0 if case == "map_eval" else -4.0)
    preds = reference.raw_to_preds(raw, REG_MAX)
    detect = reference.detect_head(num_classes, REG_MAX, STRIDES).eval()
    with torch.no_grad():
        y = detect._inference(preds)  # Detect's eval decode of these raws
    ref = reference.reference_nms(y, **kwargs)
    decoded = YoloV8Decode(num_classes=num_classes)(raw)
    ours = non_max_suppression(decoded, bounding_box_format="center_xywh",
                               **kwargs)
    total = 0
    for b, r in enumerate(ref):
        r = r.numpy()
        n = int(ours["num_detections"][b])
        assert n == len(r), (b, n, len(r))
        total += n
        got = box_ops.convert(ours["boxes"][b, :n], "center_xywh",
                              "xyxy").numpy()
        np.testing.assert_allclose(got, r[:, :4], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(ours["scores"][b, :n], r[:, 4],
                                   rtol=1e-5)
        np.testing.assert_array_equal(ours["classes"][b, :n],
                                      r[:, 5].astype(np.int64))
    assert total > 0


def test_one_hot_distributions_decode_to_their_bins():
    """Hand case: a distribution peaked on bin k decodes to distance k
    cells; the box is (point - (l, t), point + (r, b)) * stride."""
    num_classes = 2
    levels = [np.full((1, 64 // s, 32 // s, 4 * REG_MAX + num_classes),
                      -30.0, np.float32) for s in STRIDES]
    bins = (3, 5, 2, 7)  # l, t, r, b
    for side, k in enumerate(bins):
        levels[1][0, 2, 1, side * REG_MAX + k] = 30.0
    levels[1][0, 2, 1, 4 * REG_MAX:] = [0.0, 2.0]
    out = YoloV8Decode(num_classes=num_classes,
                       bounding_box_format="xyxy")(levels)
    index = (64 // 8) * (32 // 8) + 2 * (32 // 16) + 1
    px, py = 1.5 * 16, 2.5 * 16
    np.testing.assert_allclose(
        out["boxes"][0, index].numpy(),
        [px - 3 * 16, py - 5 * 16, px + 2 * 16, py + 7 * 16], atol=1e-3)
    np.testing.assert_allclose(out["class_probs"][0, index].numpy(),
                               [0.5, 1 / (1 + np.exp(-2.0))], rtol=1e-6)
    # Uniform logits: the expectation is the mean bin, 7.5 cells.
    uniform = [np.zeros_like(p) for p in levels]
    boxes = YoloV8Decode(bounding_box_format="center_xywh")(uniform)["boxes"]
    np.testing.assert_allclose(boxes[0, 0].numpy(), [4.0, 4.0, 120.0, 120.0],
                               rtol=1e-5)


def test_relative_format_and_run_time_shapes():
    raw = random_levels(np.random.default_rng(2), 2, (64, 128), 3)
    pixel = YoloV8Decode()(raw)["boxes"].numpy()
    rel_layer = YoloV8Decode(bounding_box_format="rel_xyxy")
    rel = rel_layer(raw)["boxes"].numpy()
    want = box_ops.convert(pixel, "center_xywh", "rel_xyxy",
                           image_shape=(64, 128)).numpy()
    np.testing.assert_allclose(rel, want, rtol=1e-5, atol=1e-6)
    spec = [tf.TensorSpec([None, None, None, 4 * REG_MAX + 3], tf.float32)] * 3
    dynamic = tf.function(rel_layer, input_signature=[spec])
    np.testing.assert_allclose(dynamic(raw)["boxes"].numpy(), rel,
                               rtol=1e-5, atol=1e-6)
    raw2 = random_levels(np.random.default_rng(3), 1, (96, 64), 3)
    np.testing.assert_allclose(dynamic(raw2)["boxes"].numpy(),
                               rel_layer(raw2)["boxes"].numpy(), rtol=1e-5,
                               atol=1e-6)
    xla = tf.function(rel_layer, jit_compile=True)(raw)
    np.testing.assert_allclose(xla["boxes"].numpy(), rel, rtol=1e-5,
                               atol=1e-6)


def test_in_a_functional_model_and_config_round_trip():
    inputs = [keras.Input((64 // s, 64 // s, 4 * REG_MAX + 4))
              for s in STRIDES]
    layer = YoloV8Decode(num_classes=4, bounding_box_format="xyxy")
    out = layer(inputs)
    assert out["boxes"].shape == (None, 64 + 16 + 4, 4)
    assert out["class_probs"].shape == (None, 84, 4)
    model = keras.Model(inputs, out)
    config = layer.get_config()
    again = YoloV8Decode.from_config(config)
    assert again.get_config() == config
    raw = random_levels(np.random.default_rng(4), 1, (64, 64), 4)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model))
    np.testing.assert_allclose(restored(raw)["boxes"].numpy(),
                               model(raw)["boxes"].numpy(), rtol=1e-6)


@pytest.mark.parametrize("kwargs, word", [
    (dict(num_classes=0), "num_classes"),
    (dict(reg_max=1), "reg_max"),
    (dict(bounding_box_format="cxcywh"), "bounding_box_format"),
])
def test_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        YoloV8Decode(**kwargs)


def test_wrong_channels_and_levels_are_named():
    raw = random_levels(np.random.default_rng(5), 1, (64, 64), 3)
    with pytest.raises(ValueError, match="level 0 has 67 channels"):
        YoloV8Decode(num_classes=4)(raw)
    with pytest.raises(ValueError, match="3 levels"):
        YoloV8Decode()(raw[:2])


def test_traced_with_unknown_batch_keeps_static_point_count():
    """Exports trace with an unknown batch: N must stay static for NMS."""
    layer = YoloV8Decode(num_classes=3)
    spec = [tf.TensorSpec([None, 64 // s, 96 // s, 4 * REG_MAX + 3],
                          tf.float32) for s in STRIDES]

    @tf.function(input_signature=[spec])
    def detect(levels):
        return non_max_suppression(layer(levels), conf_thres=0.2)

    graph = tf.function(layer).get_concrete_function(spec)
    n = 8 * 12 + 4 * 6 + 2 * 3
    assert graph.structured_outputs["boxes"].shape.as_list() == [None, n, 4]
    assert graph.structured_outputs["objectness"].shape.as_list() == [None, n]
    assert graph.structured_outputs["class_probs"].shape.as_list() == [
        None, n, 3]
    raw = random_levels(np.random.default_rng(6), 2, (64, 96), 3,
                        cls_bias=0.0)
    eager = non_max_suppression(layer(raw), conf_thres=0.2)
    traced = detect(raw)
    np.testing.assert_array_equal(traced["num_detections"],
                                  eager["num_detections"])
    np.testing.assert_allclose(traced["boxes"], eager["boxes"], rtol=1e-6)
