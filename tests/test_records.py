"""Records of a run a user can look at, and `evaluate --run` scoring the
run's own validation images (all of them)."""

import json
import os
import sys

import numpy as np
import pytest

from training import __main__ as training_main
from training import cli

TESTS = os.path.dirname(os.path.abspath(__file__))
RACCOON = os.path.join(TESTS, "..", "..", "shared", "datasets", "raccoon")


def _parse(argv):
    parser = cli.argparse.ArgumentParser()
    cli.add_evaluate_parser(parser.add_subparsers())
    return parser.parse_args(["evaluate", *argv])


def test_evaluate_takes_the_runs_settings_unless_given_explicitly():
    saved = {"data": "coco", "num_classes": 1, "max_boxes": 7,
             "val_images": 40, "seed": 3, "image_size": 96,
             "val_json": "a.json", "val_images_dir": "imgs"}
    args = cli.resolve_evaluate_args(_parse(["--run", "r"]), saved)
    for key, value in saved.items():
        assert getattr(args, key) == value, key
    # Explicit values win, even when equal to the built-in defaults.
    args = cli.resolve_evaluate_args(_parse(
        ["--run", "r", "--data", "shapes", "--num-classes", "3",
         "--seed", "0", "--max-boxes", "20"]), saved)
    assert (args.data, args.num_classes, args.seed, args.max_boxes) == (
        "shapes", 3, 0, 20)
    assert args.val_images == 40
    # Without a run: the defaults.
    args = cli.resolve_evaluate_args(_parse(["--model", "m.keras"]), {})
    assert (args.data, args.num_classes, args.max_boxes, args.val_images,
            args.seed) == ("shapes", 3, 20, 128, 0)


@pytest.fixture(scope="module")
def v5_run_model(tmp_path_factory):
    """An (untrained) small_v5 at 64 px, 1 class, saved as a run would."""
    from serving.detector import decode_config_path, save_decode_config
    from training import recipes

    root = tmp_path_factory.mktemp("v5model")
    recipe = recipes.make_recipe("v5", num_classes=1, image_size=64)
    path = str(root / "model.keras")
    recipe.build_model().save(path)
    save_decode_config(recipe.decode_config, decode_config_path(path))
    return path


def _run_dir(tmp_path, model_path, args):
    import shutil

    from serving.detector import decode_config_path

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model_path, run / "model.keras")
    shutil.copy(decode_config_path(model_path),
                decode_config_path(str(run / "model.keras")))
    (run / "config.json").write_text(json.dumps({"args": args}))
    return str(run)


def test_evaluate_run_scores_the_runs_coco_images_with_the_remainder(
        tmp_path, v5_run_model):
    # A run trained on 5 raccoon photos (COCO JSON), 1 class; evaluated with
    # batches of 4: all 5 images and their 5 boxes must be scored (today:
    # 128 generated shapes images with 3 classes, or 4 of the 5 images).
    with open(os.path.join(RACCOON, "instances_raccoon.json")) as f:
        coco = json.load(f)
    ids = [image["id"] for image in coco["images"][:5]]
    subset = {"images": coco["images"][:5], "categories": coco["categories"],
              "annotations": [a for a in coco["annotations"]
                              if a["image_id"] in ids]}
    json_path = tmp_path / "val.json"
    json_path.write_text(json.dumps(subset))
    run = _run_dir(tmp_path, v5_run_model, {
        "data": "coco", "val_json": str(json_path),
        "val_images_dir": os.path.join(RACCOON, "images"),
        "image_size": 64, "num_classes": 1, "max_boxes": 4, "seed": 0,
        "val_images": 999})
    assert training_main.main(["evaluate", "--run", run,
                               "--batch-size", "4"]) == 0
    with open(os.path.join(run, "evaluate.json")) as f:
        result = json.load(f)
    assert result["num_images"] == 5
    assert len(result["per_class_map"]) == 1


def test_evaluate_run_keeps_explicit_overrides_and_the_last_batch(
        tmp_path, v5_run_model):
    run = _run_dir(tmp_path, v5_run_model, {
        "data": "shapes", "image_size": 64, "num_classes": 1,
        "max_boxes": 5, "val_images": 10, "seed": 4})
    assert training_main.main(["evaluate", "--run", run, "--batch-size",
                               "4"]) == 0
    with open(os.path.join(run, "evaluate.json")) as f:
        assert json.load(f)["num_images"] == 10     # 4 + 4 + 2
    assert training_main.main(["evaluate", "--run", run, "--batch-size",
                               "4", "--val-images", "3"]) == 0
    with open(os.path.join(run, "evaluate.json")) as f:
        assert json.load(f)["num_images"] == 3      # one partial batch


@pytest.mark.parametrize("version", ["v5", "v2"])
def test_fit_logs_the_loss_terms_that_sum_to_the_loss(version):
    import keras
    import tensorflow as tf

    from keras_yolo import data
    from training import recipes

    recipe = recipes.make_recipe(version, num_classes=2, image_size=64)
    model = recipe.build_model()
    loss = recipe.build_loss()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
    batch = next(iter(data.shapes(num_images=4, image_size=64, num_classes=2,
                                  seed=0).batch(4)))
    # In a graph, as fit's step (eager kernels round differently, ~1e-3).
    terms = tf.function(lambda x, y: loss.components(
        y, model(x, training=True)))
    expected = {k: float(v) for k, v in terms(*batch).items()}

    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            seen.append(dict(logs))

    model.fit(batch[0], batch[1], batch_size=4, epochs=1, verbose=0,
              callbacks=[Record()])
    logs = seen[0]
    obj = expected["obj"] + expected.get("noobj", 0.0)
    assert logs["box"] == pytest.approx(expected["box"], rel=1e-5)
    assert logs["obj"] == pytest.approx(obj, rel=1e-5)
    assert logs["cls"] == pytest.approx(expected["cls"], rel=1e-5)
    # The terms come from the evaluation that gave the loss: exact sum.
    scale = 4 if getattr(loss, "scale_by_batch_size", False) else 1
    assert logs["loss"] == pytest.approx(
        scale * (logs["box"] + logs["obj"] + logs["cls"]), rel=1e-5)
