"""Records of a run a user can look at, and `evaluate --run` scoring the
run's own validation images (all of them)."""

import csv
import json
import os
import sys

import numpy as np
import pytest

from training import __main__ as training_main
from training import cli

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    for key, value in cli.EVALUATE_DEFAULTS.items():
        assert getattr(args, key) == value, key
    assert (args.data, args.num_classes, args.val_images, args.seed) == (
        "shapes", 3, 128, 0)


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


@pytest.mark.parametrize("version", [
    "v5", pytest.param("v2", marks=pytest.mark.slow)])   # v2: noobj in obj
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


def test_results_csv_and_png_follow_the_history(tmp_path):
    from training import plots, records

    history = [{"epoch": 1, "loss": 3.0, "box": 1.0, "obj": 1.5, "cls": 0.5,
                "lr": 0.01, "seconds": 2.0},
               {"epoch": 2, "loss": 2.0, "box": 0.5, "obj": 1.0, "cls": 0.5,
                "lr": 0.005, "val_map50": 0.25, "val_map": 0.1,
                "seconds": 2.5}]
    path = records.write_results(str(tmp_path), history)
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "box", "obj", "cls", "lr",
                       "val_map50", "val_map", "seconds"]
    assert rows[1] == ["1", "3", "1", "1.5", "0.5", "0.01", "", "", "2"]
    assert rows[2][6:8] == ["0.25", "0.1"]
    assert (tmp_path / "results.png").stat().st_size > 10_000
    assert plots.plot_results(history, str(tmp_path / "r.png")) == [
        "box", "obj", "cls", "loss", "lr", "val_map50", "val_map"]


def test_prediction_grid_draws_each_box_in_its_class_colour():
    from training import plots

    images = np.zeros((3, 20, 10, 3), np.float32)
    boxes = np.zeros((3, 2, 4))
    boxes[0, 0] = [0.2, 0.1, 0.6, 0.5]          # x 2..6, y 2..10
    boxes[2, 0] = [0.0, 0.0, 1.0, 1.0]
    classes = np.array([[1, -1], [0, 0], [2, 0]])
    grid = plots.prediction_grid(images, boxes, classes, [1, 0, 1], cols=2,
                                 scores=np.full((3, 2), 0.9))
    assert grid.shape == (40, 20, 3)
    red = plots.PALETTE[1]
    np.testing.assert_array_equal(grid[2, 2:7], np.tile(red, (5, 1)))
    np.testing.assert_array_equal(grid[2:11, 2], np.tile(red, (9, 1)))
    assert (grid[5, 3:6] == 0).all()                # inside stays black
    assert (grid[0:20, 10:20] == 0).all()           # image 2: no boxes
    np.testing.assert_array_equal(grid[20, 0], plots.PALETTE[2])
    assert (grid[20:40, 10:20] == 255).all()        # empty grid cell


def test_per_class_table_and_dict():
    from training import records

    result = {"per_class_map50": [0.5, -1.0], "per_class_map": [0.25, -1.0],
              "map50": 0.5, "map": 0.25}
    table = records.per_class(result, ["cat", "dog"])
    assert table == {"cat": {"ap50": 0.5, "ap": 0.25},
                     "dog": {"ap50": None, "ap": None}}
    text = records.per_class_table(table, result)
    assert text.splitlines()[1].split() == ["cat", "0.5000", "0.2500"]
    assert text.splitlines()[2].split() == ["dog", "-", "-"]
    assert text.splitlines()[3].split() == ["all", "0.5000", "0.2500"]


def test_a_run_writes_every_record(tmp_path, capsys):
    import keras
    import tensorflow as tf

    import training
    from keras_yolo import data, metrics
    from keras_yolo.layers import NonMaxSuppression

    sys.path.insert(0, TESTS)
    from tiny_detector import TinyDecode, TinyLoss, build_tiny_model

    ds = data.shapes(num_images=16, image_size=64, num_classes=3, seed=0)
    val = data.shapes(num_images=10, image_size=64, num_classes=3, seed=1)
    nms = NonMaxSuppression(bounding_box_format="rel_center_xywh",
                            max_det=20, conf_thres=0.001)
    decode = TinyDecode()
    run_dir = str(tmp_path / "run")
    result = training.train(
        lambda: build_tiny_model(64, 3, seed=1), TinyLoss(3), ds,
        val_data=val, postprocess=lambda raw: nms(decode(raw)),
        num_classes=3, epochs=2, batch_size=8, eval_batch_size=4,
        learning_rate=0.002, strategy="default", jit_compile=False,
        run_dir=run_dir, config={"class_names": ["a", "b", "c"]})
    for name in ("results.png", "pr_curve.png", "confusion_matrix.png",
                 "val_predictions.png"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 1000, name
    with open(os.path.join(run_dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["val_map50"]) >= 0 and float(rows[1]["lr"]) > 0
    with open(os.path.join(run_dir, "metrics.json")) as f:
        saved = json.load(f)
    assert set(saved["per_class"]) == {"a", "b", "c"}
    assert saved["num_images"] == 10        # 4 + 4 + 2: none dropped
    assert saved["per_class"]["b"]["ap50"] == pytest.approx(
        saved["per_class_map50"][1])
    matrix = np.asarray(saved["confusion_matrix"])
    assert matrix.shape == (4, 4)
    gt_count = sum(int((y["labels"].numpy() >= 0).sum()) for _, y in val)
    assert matrix[:, :3].sum() == gt_count    # every truth counted once
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "img/s" in out and "AP@0.5" in out
    # TensorBoard: epoch scalars (loss, learning rate, mAP) and the image.
    tags = set()
    for root, _, files in os.walk(os.path.join(run_dir, "tensorboard")):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(
                    os.path.join(root, name)):
                tags |= {v.tag for v in event.summary.value}
    # (Keras writes val_* logs to tensorboard/validation without "val_".)
    assert {"epoch_loss", "epoch_lr", "epoch_lr_bias", "epoch_map50",
            "val_predictions"} <= tags, tags
    assert result.metrics["map50"] == saved["map50"]


def test_results_and_progress_follow_a_v8_history_with_dfl(tmp_path, capsys):
    from training import plots, records

    history = [{"epoch": 1, "loss": 3.0, "box": 1.0, "cls": 0.5, "dfl": 1.5,
                "lr": 0.01}]
    with open(records.write_results(str(tmp_path), history)) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "box", "cls", "dfl", "lr"]
    assert rows[1] == ["1", "3", "1", "0.5", "1.5", "0.01"]
    assert plots.plot_results(history, str(tmp_path / "r.png")) == [
        "box", "cls", "dfl", "loss", "lr"]
    bar = records.ProgressBar(steps_per_epoch=1, batch_size=2, epochs=1)
    bar.on_epoch_begin(0)
    bar.on_epoch_end(0, {"loss": 3.0, "box": 1.0, "cls": 0.5, "dfl": 1.5})
    line = capsys.readouterr().out
    assert "dfl: 1.5" in line and "obj" not in line
