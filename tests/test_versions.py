"""The version registry: records, lookups, decode configurations old and new."""

import dataclasses
import json

import numpy as np
import pytest

from keras_yolo import anchors as published
from keras_yolo import layers, losses, models, versions

BUILTIN = ("v1", "v2", "v3", "v4", "v5")
SIZE = 64


def _raw(version, num_classes=3, seed=0):
    """Random raw head outputs of the version's small model at SIZE."""
    rng = np.random.default_rng(seed)
    if version == "v1":
        grid = SIZE // 32
        return rng.normal(size=(2, grid, grid, 2 * 5 + num_classes)).astype("float32")
    strides = versions.get(version).strides
    levels = [rng.normal(size=(2, SIZE // s, SIZE // s, len(a), 5 + num_classes)).astype("float32")
              for s, a in zip(strides, versions.get(version).default_anchors(SIZE))]
    return levels[0] if version == "v2" else levels


def _assert_same_outputs(a, b):
    for key in ("boxes", "objectness", "class_probs"):
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_builtin_versions_name_their_classes():
    assert versions.names()[:5] == BUILTIN
    expected = {"v1": (losses.YoloV1Loss, layers.YoloV1Decode), "v2": (losses.YoloV2Loss, layers.YoloV2Decode),
                "v3": (losses.YoloV3Loss, layers.YoloV3Decode), "v4": (losses.YoloV4Loss, layers.YoloV4Decode),
                "v5": (losses.YoloV5Loss, layers.YoloV5Decode)}
    for name, (loss, decode) in expected.items():
        assert (versions.get(name).loss, versions.get(name).decode) == (loss, decode)
    assert versions.get("v5").autoanchor and not versions.get("v3").autoanchor


def test_unknown_version_error_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown YOLO version 'v9'; registered: v1, v2, v3, v4, v5"):
        versions.get("v9")


def test_records_are_frozen():
    v5 = versions.get("v5")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v5.loss = None
    with pytest.raises(TypeError):
        v5.models["yolov5q"] = None
    with pytest.raises(TypeError):
        v5.serving_nms["conf_thres"] = 0.5


def test_head_arguments_scale_the_published_anchors():
    head = versions.get("v5").head_arguments(SIZE)
    np.testing.assert_allclose(head["anchors"], np.asarray(published.YOLOV3_ANCHORS) * SIZE / 416)
    assert head["strides"] == (8, 16, 32)
    head = versions.get("v4").head_arguments(SIZE, model="yolov4-tiny")
    np.testing.assert_allclose(head["anchors"], np.asarray(models.model_spec("yolov4-tiny")["anchors"]) * SIZE / 416)
    assert head["strides"] == (16, 32)
    assert versions.get("v2").head_arguments(SIZE)["strides"] == (32,)
    assert versions.get("v1").head_arguments(SIZE) == {"grid_size": 2, "boxes_per_cell": 2,
                                                        "parametrization": "logistic"}
    assert versions.get("v1").head_arguments(448, model="yolov1")["grid_size"] == 7
    with pytest.raises(ValueError, match="no anchors"):
        versions.get("v1").head_arguments(SIZE, anchors=[[[1, 1]]])


def test_named_models_come_from_the_registry():
    assert models.available_models() == versions.model_names()
    assert [m for m in versions.model_names() if m.startswith("yolov5")][:5] == [
        "yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"]
    assert versions.of_model("yolov3-tiny")[0].name == "v3"
    with pytest.raises(ValueError, match="yolov5s"):
        models.build("yolov9")


@pytest.mark.parametrize("version", BUILTIN)
def test_decode_config_is_the_layers_config_and_round_trips(version):
    head = versions.get(version).head_arguments(SIZE)
    layer = versions.make_decode_layer(version, 3, head, SIZE, "xyxy")
    config = json.loads(json.dumps(versions.decode_config(layer, input_shape=(SIZE, SIZE, 3), num_classes=3)))
    assert (config["version"], config["layer"], config["input_shape"], config["num_classes"]) == (
        version, type(layer).__name__, [SIZE, SIZE, 3], 3)
    own = json.loads(json.dumps(layer.get_config()))
    assert {k: config[k] for k in own} == own
    restored = versions.decode_layer(config)
    assert restored.bounding_box_format == "xyxy"
    _assert_same_outputs(restored(_raw(version)), layer(_raw(version)))
    assert versions.decode_layer(config, "rel_xyxy").bounding_box_format == "rel_xyxy"


def test_decode_configs_of_the_older_form_still_load():
    # What training/recipes.py wrote before the registry (its v1 and v4 entries).
    v1_old = {"version": "v1", "num_classes": 3, "input_shape": [SIZE, SIZE, 3], "grid_size": 2,
              "boxes_per_cell": 2, "sqrt": None, "softmax": None, "parametrization": "logistic"}
    expected = layers.YoloV1Decode(3, 2, 2, "xyxy", image_shape=(SIZE, SIZE), parametrization="logistic")
    _assert_same_outputs(versions.decode_layer(v1_old, "xyxy")(_raw("v1")), expected(_raw("v1")))
    anchors = versions.get("v4").default_anchors(SIZE)
    v4_old = {"version": "v4", "num_classes": 3, "input_shape": [SIZE, SIZE, 3], "anchors": anchors,
              "strides": [8, 16, 32], "scale_x_y": [1.2, 1.1, 1.05]}
    expected = layers.YoloV4Decode(anchors, (8, 16, 32), scale_x_y=(1.2, 1.1, 1.05), bounding_box_format="xyxy")
    _assert_same_outputs(versions.decode_layer(v4_old, "xyxy")(_raw("v4")), expected(_raw("v4")))
    # A darknet [detection] cfg's (keras_yolo.weights.load_darknet): darknet's linear boxes.
    darknet_v1 = {"version": "v1", "num_classes": 3, "input_shape": [SIZE, SIZE, 3], "grid_size": 2,
                  "boxes_per_cell": 2, "sqrt": True, "softmax": False, "flavor": "pjreddie"}
    layer = versions.decode_layer(darknet_v1)
    assert (layer.parametrization, layer.sqrt, layer.softmax, layer.image_shape) == ("linear", True, False,
                                                                                     (SIZE, SIZE))
    with pytest.raises(ValueError, match="'version'"):
        versions.decode_layer({"anchors": anchors})


def test_a_registered_version_reaches_recipes_and_serving():
    from serving.detector import build_detector
    from training import recipes

    v5 = versions.get("v5")
    custom = dataclasses.replace(v5, name="v5-test", models={},
                                 serving_nms={"conf_thres": 0.5, "iou_thres": 0.3, "max_det": 7})
    versions.register(custom)
    try:
        with pytest.raises(ValueError, match="already registered"):
            versions.register(custom)
        recipe = recipes.make_recipe("v5-test", num_classes=2, image_size=SIZE)
        assert recipe.decode_config["version"] == "v5-test"
        assert isinstance(recipe.build_loss(), losses.YoloV5Loss)
        model = recipe.build_model()
        detector = build_detector(model, recipe.decode_config, "xyxy")
        nms = [layer for layer in detector.layers if type(layer).__name__ == "NonMaxSuppression"][0]
        assert (nms.conf_thres, nms.iou_thres, nms.max_det) == (0.5, 0.3, 7)
    finally:
        versions.unregister("v5-test")
    assert "v5-test" not in versions.names()


def test_register_refuses_a_model_name_of_another_version():
    clash = dataclasses.replace(versions.get("v3"), name="v3-clash")
    with pytest.raises(ValueError, match="yolov3"):
        versions.register(clash)
    assert "v3-clash" not in versions.names()


def test_hyperparameter_names_are_the_losses_own():
    assert {"box", "obj", "cls", "anchor_t", "fl_gamma", "cls_pw", "obj_pw"} <= set(
        versions.get("v5").hyperparameter_names())
    assert {"lambda_coord", "lambda_noobj"} <= set(versions.get("v1").hyperparameter_names())
    assert "anchors" not in versions.get("v3").hyperparameter_names()


def test_v5_loss_hyperparameters_are_scaled_as_train_py_does():
    # train.py: box *= 3 / nl, cls *= nc / 80 * 3 / nl, obj *= (imgsz / 640)^2 * 3 / nl
    args = versions.get("v5").loss_arguments(4, 320, 3, {"box": 0.1, "obj": 0.8, "cls": 0.4, "fl_gamma": 1.5})
    assert args["box"] == pytest.approx(0.1)
    assert args["cls"] == pytest.approx(0.4 * 4 / 80)
    assert args["obj"] == pytest.approx(0.8 * (320 / 640) ** 2)
    assert args["fl_gamma"] == 1.5
    assert versions.get("v3").loss_arguments(4, 320, 3, {"ignore_thresh": 0.6}) == {"ignore_thresh": 0.6}
    with pytest.raises(ValueError, match="lambda_coord"):
        versions.get("v5").loss_arguments(4, 320, 3, {"lambda_coord": 1.0})


def test_v8_is_one_registry_entry_from_recipe_to_decode_config():
    from training import recipes

    recipe = recipes.make_recipe("v8", num_classes=2, image_size=SIZE)
    assert recipe.head == {"strides": (8, 16, 32), "reg_max": 16}
    assert type(recipe.build_loss()).__name__ == "YoloV8Loss"
    model = recipe.build_model()
    images = np.random.default_rng(0).uniform(size=(1, SIZE, SIZE, 3)).astype("float32")
    raw = model(images)
    saved = json.loads(json.dumps(recipe.decode_config))
    assert (saved["version"], saved["layer"], saved["num_classes"]) == ("v8", "YoloV8Decode", 2)
    _assert_same_outputs(versions.decode_layer(saved)(raw), recipe.decode_layer()(raw))
    # load_yolov8's model.decode_config (the older, "layer"-less form).
    imported = {"version": "v8", "num_classes": 2, "reg_max": 16, "strides": [8, 16, 32],
                "input_shape": [SIZE, SIZE, 3], "size": "n"}
    _assert_same_outputs(versions.decode_layer(imported, "rel_center_xywh")(raw), recipe.decode_layer()(raw))
    assert {"box", "cls", "dfl"} <= set(versions.get("v8").hyperparameter_names())
    assert "reg_max" not in versions.get("v8").hyperparameter_names()
    assert versions.get("v8").eval_nms["iou_thres"] == 0.7
    with pytest.raises(ValueError, match="no anchors"):
        recipes.make_recipe("v8", 2, SIZE, anchors=[[[1, 1]]])


def test_hyperparameter_names_leave_out_state_and_aliases():
    v2 = versions.get("v2").hyperparameter_names()
    v5 = versions.get("v5").hyperparameter_names()
    assert "seen" not in v2 and "lambda_noobj" in v2
    assert not {"balance_state", "scale_by_batch_size"} & set(v5)
    assert {"box", "obj", "cls", "anchor_t", "fl_gamma"} <= set(v5)
