"""The v2-v5 decode layers: one decode (keras_yolo.grid), shapes, specs, configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_yolo import anchors as default_anchors
from keras_yolo import boxes as box_ops
from keras_yolo import grid, layers

V3_ANCHORS = default_anchors.YOLOV3_ANCHORS
# layer, per-level anchors, grid.decode_level options, native box format
VERSIONS = {
    "v2": (lambda **kw: layers.YoloV2Decode(**kw), [default_anchors.YOLOV2_COCO_ANCHORS[0]], (32,),
           dict(class_activation="softmax"), "rel_center_xywh"),
    "v3": (lambda **kw: layers.YoloV3Decode(**kw), V3_ANCHORS, (8, 16, 32), {}, "rel_center_xywh"),
    "v4": (lambda **kw: layers.YoloV4Decode(**kw), default_anchors.YOLOV4_ANCHORS, (8, 16, 32),
           dict(scale_x_y=grid.YOLOV4_SCALE_X_Y), "rel_center_xywh"),
    "v5": (lambda **kw: layers.YoloV5Decode(**kw), default_anchors.YOLOV5_ANCHORS, (8, 16, 32),
           dict(scale_x_y=2.0, size="square_sigmoid", units="pixels"), "center_xywh"),
}


def raw_levels(anchors, strides, image=64, channels=7, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 2, (2, image // s, image // s, len(a), channels)).astype(np.float32)
            for a, s in zip(anchors, strides)]


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_layer_is_grid_decode_level_flattened_and_converted(version):
    make, anchors, strides, options, native = VERSIONS[version]
    raw = raw_levels(anchors, strides)
    out = make(bounding_box_format="xyxy")(raw if len(raw) > 1 else raw[0])
    parts = []
    for level, (r, a, s) in enumerate(zip(raw, anchors, strides)):
        opts = dict(options)
        if "scale_x_y" in opts and not isinstance(opts["scale_x_y"], float):
            opts["scale_x_y"] = opts["scale_x_y"][level]
        parts.append(grid.decode_level(tf.constant(r), a, s, **opts))
    boxes = np.concatenate([p["boxes"].numpy().reshape(2, -1, 4) for p in parts], 1)
    boxes = box_ops.convert(boxes, native, "xyxy", image_shape=(64, 64))
    np.testing.assert_allclose(out["boxes"], boxes, rtol=1e-6, atol=1e-5)
    for key in ("objectness", "class_probs"):
        want = np.concatenate([p[key].numpy().reshape((2, -1) + tuple(p[key].shape[4:])) for p in parts], 1)
        np.testing.assert_allclose(out[key], want, rtol=1e-6)


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_every_layer_defines_its_output_spec(version):
    make, anchors, strides, _, _ = VERSIONS[version]
    static = [keras.Input((64 // s, 64 // s, len(a), 7)) for a, s in zip(anchors, strides)]
    layer = make()
    spec = layer.compute_output_spec(static)
    n = sum((64 // s) ** 2 * len(a) for a, s in zip(anchors, strides))
    assert spec["boxes"].shape == (None, n, 4)
    assert spec["objectness"].shape == (None, n)
    assert spec["class_probs"].shape == (None, n, 2)
    dynamic = [keras.Input((None, None, len(a), 7)) for a in anchors]
    model = keras.Model(dynamic, make()(dynamic))
    assert model.output["boxes"].shape == (None, None, 4)
    raw = raw_levels(anchors, strides)
    np.testing.assert_allclose(model(raw)["boxes"], layer(raw)["boxes"], rtol=1e-6)


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_defaults_and_config_round_trip_are_unchanged(version):
    make, _, _, _, native = VERSIONS[version]
    layer = make()
    # v5 keeps ultralytics' pixel default, v2-v4 their relative one.
    assert layer.bounding_box_format == native
    config = layer.get_config()
    again = type(layer).from_config(config)
    assert again.get_config() == config


@pytest.mark.parametrize("version", ["v3", "v4", "v5"])
def test_wrong_channel_and_level_counts_are_named(version):
    make, anchors, strides, _, _ = VERSIONS[version]
    raw = raw_levels(anchors, strides)
    with pytest.raises(ValueError, match="num_classes=4"):
        make(num_classes=4)(raw)
    with pytest.raises(ValueError, match="3 levels"):
        make()(raw[:2])
    with pytest.raises(ValueError, match="anchors"):
        make()([r[..., :2, :] for r in raw])
    with pytest.raises(ValueError, match="num_classes"):
        make(num_classes=0)


def test_nms_layer_lives_in_layers_and_keeps_its_registered_name(tmp_path):
    from keras_yolo import postprocess
    assert postprocess.NonMaxSuppression is layers.NonMaxSuppression
    assert keras.saving.get_registered_name(layers.NonMaxSuppression) == "keras_yolo>NonMaxSuppression"
    inputs = [keras.Input((8, 8, 3, 7)), keras.Input((4, 4, 3, 7)), keras.Input((2, 2, 3, 7))]
    detections = layers.NonMaxSuppression(max_det=5)(layers.YoloV5Decode()(inputs))
    model = keras.Model(inputs, detections)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    raw = raw_levels(default_anchors.YOLOV5_ANCHORS, (8, 16, 32))
    for key in ("boxes", "scores", "num_detections"):
        np.testing.assert_allclose(loaded(raw)[key], model(raw)[key])
