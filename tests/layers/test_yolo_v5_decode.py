"""YoloV5Decode against ultralytics' Detect (inference branch) and by hand."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import require_peer

import keras
from keras_yolo.anchors import YOLOV5_ANCHORS
from keras_yolo.layers import YoloV5Decode

STRIDES = (8, 16, 32)


def _raw(image_hw, batch=2, num_classes=80, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 2, (batch, image_hw[0] // s, image_hw[1] // s, 3,
                              5 + num_classes)).astype(np.float32)
            for s in STRIDES]


def _numpy_decode(raw):
    """float64 derivation of the formula, same (level, row, col, anchor)
    order as the layer."""
    boxes, obj, cls = [], [], []
    for level, p in enumerate(raw):
        p = p.astype(np.float64)
        _, h, w, a, _ = p.shape
        s = STRIDES[level]
        sig = 1 / (1 + np.exp(-p))
        gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        x = (2 * sig[..., 0] - 0.5 + gx[None, :, :, None]) * s
        y = (2 * sig[..., 1] - 0.5 + gy[None, :, :, None]) * s
        anchors = np.asarray(YOLOV5_ANCHORS[level], np.float64)
        bw = (2 * sig[..., 2]) ** 2 * anchors[:, 0]
        bh = (2 * sig[..., 3]) ** 2 * anchors[:, 1]
        batch = p.shape[0]
        boxes.append(np.stack([x, y, bw, bh], -1).reshape(batch, -1, 4))
        obj.append(sig[..., 4].reshape(batch, -1))
        cls.append(sig[..., 5:].reshape(batch, h * w * a, -1))
    return (np.concatenate(boxes, 1), np.concatenate(obj, 1),
            np.concatenate(cls, 1))


@pytest.mark.parametrize("image_hw", [(640, 640), (256, 416)])
def test_matches_float64_formula(image_hw):
    raw = _raw(image_hw, num_classes=4)
    out = YoloV5Decode()(raw)
    boxes, obj, cls = _numpy_decode(raw)
    np.testing.assert_allclose(out["boxes"].numpy(), boxes, rtol=2e-6,
                               atol=1e-4)
    np.testing.assert_allclose(out["objectness"].numpy(), obj, atol=1e-6)
    np.testing.assert_allclose(out["class_probs"].numpy(), cls, atol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("image_hw", [(640, 640), (256, 416)])
def test_matches_ultralytics_detect(image_hw):
    reference = require_peer("yolov5_reference", "(bash .ci/install_parity)")
    torch = reference.load().torch
    detect = reference.load().yolo.Detect(
        nc=80, anchors=np.asarray(YOLOV5_ANCHORS).reshape(3, -1).tolist(),
        ch=[8, 8, 8])
    detect.stride = torch.tensor([8.0, 16.0, 32.0])
    detect.anchors /= detect.stride.view(-1, 1, 1)
    detect.m = torch.nn.ModuleList([torch.nn.Identity()] * 3)  # raw in
    detect.eval()
    raw = _raw(image_hw)
    # Ours (B, H, W, A, no) -> Detect's conv output (B, A * no, H, W).
    torch_in = [torch.tensor(p.transpose(0, 3, 4, 1, 2).reshape(
        p.shape[0], -1, p.shape[1], p.shape[2]).copy()) for p in raw]
    with torch.no_grad():
        ref = detect(torch_in)[0].numpy()  # (B, sum A H W, 85), A-major
    # Reorder ultralytics' (anchor, row, col) to our (row, col, anchor).
    parts, start = [], 0
    for p in raw:
        _, h, w, a, no = p.shape
        block = ref[:, start:start + a * h * w].reshape(-1, a, h, w, no)
        parts.append(block.transpose(0, 2, 3, 1, 4).reshape(-1, h * w * a,
                                                             no))
        start += a * h * w
    ref = np.concatenate(parts, 1)
    out = YoloV5Decode(bounding_box_format="center_xywh")(raw)
    np.testing.assert_allclose(out["boxes"].numpy(), ref[..., :4], rtol=1e-6,
                               atol=1e-4)
    # TF's and torch's float32 sigmoids differ by at most 2 ulp (< 2.4e-7).
    np.testing.assert_allclose(out["objectness"].numpy(), ref[..., 4],
                               rtol=0, atol=2.4e-7)
    np.testing.assert_allclose(out["class_probs"].numpy(), ref[..., 5:],
                               rtol=0, atol=2.4e-7)


def test_relative_format_is_fraction_of_input():
    raw = _raw((128, 192), num_classes=2)
    pix = YoloV5Decode(bounding_box_format="xyxy")(raw)["boxes"].numpy()
    rel = YoloV5Decode(bounding_box_format="rel_xyxy")(raw)["boxes"].numpy()
    np.testing.assert_allclose(rel * [192, 128, 192, 128], pix, rtol=1e-5,
                               atol=1e-3)


def test_hand_computed_cell():
    """All-zero logits: sigmoid 0.5, centre at cell + 0.5, wh = anchor."""
    raw = [np.zeros((1, 2, 2, 3, 6), np.float32),
           np.zeros((1, 1, 1, 3, 6), np.float32),
           np.zeros((1, 1, 1, 3, 6), np.float32)]
    out = YoloV5Decode()(raw)
    # Level 0, row 1, column 0, anchor 2: (0.5 + 0) * 8, (0.5 + 1) * 8.
    index = (1 * 2 + 0) * 3 + 2
    np.testing.assert_allclose(out["boxes"][0, index], [4.0, 12.0, 33, 23])
    np.testing.assert_allclose(out["objectness"][0, index], 0.5)


def test_jit_and_get_config_round_trip():
    layer = YoloV5Decode(bounding_box_format="rel_center_xywh")
    clone = YoloV5Decode.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    raw = [tf.constant(r) for r in _raw((64, 96), num_classes=3)]
    eager = layer(raw)
    jitted = tf.function(clone, jit_compile=True)(raw)
    for key in eager:
        np.testing.assert_allclose(jitted[key].numpy(), eager[key].numpy(),
                                   rtol=1e-6, atol=1e-6)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert restored.get_config() == layer.get_config()


def test_in_a_functional_model():
    inputs = [keras.Input((8 // s, 8 // s, 3, 7)) for s in (1, 2, 4)]
    outputs = YoloV5Decode(anchors=YOLOV5_ANCHORS, strides=(8, 16, 32))(
        inputs)
    model = keras.Model(inputs, outputs)
    assert model.output["boxes"].shape == (None, (64 + 16 + 4) * 3, 4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="anchors"):
        YoloV5Decode(anchors=[[1, 2, 3]])
    with pytest.raises(ValueError, match="strides"):
        YoloV5Decode(strides=(8, 16))
    with pytest.raises(ValueError, match="bounding_box_format"):
        YoloV5Decode(bounding_box_format="cxcy")
    with pytest.raises(ValueError, match="levels"):
        YoloV5Decode()(_raw((64, 64))[:2])


def test_num_classes_checks_the_channel_count():
    raw = _raw((64, 64), num_classes=3)
    out = YoloV5Decode(num_classes=3)(raw)
    assert out["class_probs"].shape[-1] == 3
    with pytest.raises(ValueError, match="level 0 has 8 channels.*5 \\+ "
                       "num_classes = 10"):
        YoloV5Decode(num_classes=5)(raw)
    config = YoloV5Decode(num_classes=3).get_config()
    assert YoloV5Decode.from_config(config).num_classes == 3
