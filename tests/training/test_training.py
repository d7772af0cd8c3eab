"""training: strategies, XLA, schedules, EMA, checkpoints and resume."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import training
import training.run
from keras_yolo import data
from training import strategy as strategy_lib

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

from tiny_detector import TinyLoss, build_tiny_model  # noqa: E402

IMAGE = 64


@pytest.fixture(scope="module")
def shapes32():
    return data.shapes(num_images=32, image_size=IMAGE, num_classes=3, seed=0)


class StepLosses(keras.callbacks.Callback):
    """Keras' running mean of the epoch's loss after every step."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


MIRRORED_SCRIPT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)   # before TF starts
import keras, numpy as np
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import training
import training.run
from keras_yolo import data
from tiny_detector import build_tiny_model, TinyLoss

class Steps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__(); self.losses = []
    def on_train_batch_end(self, b, logs=None):
        self.losses.append(float(logs["loss"]))

ds = data.shapes(num_images=32, image_size=64, num_classes=3, seed=0)
out = {}
fit = keras.Model.fit
for name in ("default", "mirrored"):
    steps = Steps()
    def recording_fit(self, *a, **k):
        k["callbacks"] = list(k.get("callbacks") or []) + [steps]
        return fit(self, *a, **k)
    keras.Model.fit = recording_fit
    res = training.train(
        lambda: build_tiny_model(64, 3, seed=0), TinyLoss(3), ds, epochs=2,
        batch_size=8, optimizer="sgd", learning_rate=0.01, ema=False,
        shuffle=False, strategy=name, jit_compile=False, warmup_epochs=0,
        run_dir=os.path.join(sys.argv[3], name))
    keras.Model.fit = fit
    strategy = training.make_strategy(name)
    out[name] = {"losses": steps.losses,
                 "replicas": res.metrics["replicas"],
                 "jit": training.resolve_jit_compile("auto", strategy),
                 "weights": [w.tolist() for w in res.model.get_weights()[:2]]}
print("RESULT" + json.dumps(out))
"""


def test_mirrored_two_cpus_matches_one_device_for_the_same_global_batch(
        tmp_path):
    # Global batch 8 = 2 replicas x 4 images. Same loss after every step and
    # same weights after 8 SGD steps means the per-replica loss is divided by
    # the replica count before the cross-replica gradient sum (otherwise the
    # gradient, and Keras' reported loss, would be twice as large).
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, ROOT, TESTS, str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT"):])
    one, two = out["default"], out["mirrored"]
    assert one["replicas"] == 1 and two["replicas"] == 2
    # "auto": graph mode on CPU (XLA is slower there), and never XLA under
    # MirroredStrategy over CPUs (it fails there); the XLA path itself is
    # tested on one device below.
    if not tf.config.list_physical_devices("GPU"):
        assert one["jit"] is False
    assert two["jit"] is False
    assert len(one["losses"]) == len(two["losses"]) == 8
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-4)
    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-3,
                                   atol=1e-5)


def test_jit_compiled_step_matches_the_graph_step(shapes32, tmp_path):
    losses = {}
    for jit in (True, False):
        steps = StepLosses()
        result = training.train(
            lambda: build_tiny_model(IMAGE, 3, seed=1), TinyLoss(3), shapes32,
            epochs=1, batch_size=8, optimizer="sgd", learning_rate=0.01,
            shuffle=False, strategy="default", jit_compile=jit,
            run_dir=str(tmp_path / f"jit{jit}"), ema=False, warmup_epochs=0,
            extra_callbacks=[steps])
        assert result.model.jit_compile is jit
        assert result.metrics["jit_compile"] is jit
        losses[jit] = steps.losses
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)


def test_jit_compile_choice_follows_the_strategy():
    default = tf.distribute.get_strategy()
    # "auto": XLA on a GPU, graph mode on CPU (the faster path there).
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    assert strategy_lib.resolve_jit_compile("auto", default) is on_gpu
    assert strategy_lib.resolve_jit_compile(True, default) is True
    assert strategy_lib.resolve_jit_compile(False, default) is False
    with pytest.raises(ValueError, match="jit_compile"):
        strategy_lib.resolve_jit_compile("yes", default)
    with pytest.raises(ValueError, match="strategy"):
        strategy_lib.make_strategy("tpu")


def test_warmup_cosine_schedule_hand_values_and_config():
    s = training.WarmupDecay(0.1, total_steps=110, warmup_steps=10,
                             decay="cosine", final_fraction=0.01)
    # warmup: 0.1 * step / 10; cosine: 0.1 * (0.01 + 0.99 (1 + cos(pi x)) / 2)
    expected = {0: 0.0, 5: 0.05, 10: 0.1, 60: 0.1 * (0.01 + 0.99 * 0.5),
                110: 0.001, 500: 0.001}
    for step, value in expected.items():
        assert float(s(step)) == pytest.approx(value, rel=1e-5, abs=1e-8)
    linear = training.WarmupDecay(1.0, total_steps=100, decay="linear",
                                  final_fraction=0.0)
    assert float(linear(25)) == pytest.approx(0.75)
    again = training.WarmupDecay.from_config(s.get_config())
    assert float(again(37)) == pytest.approx(float(s(37)))
    with pytest.raises(ValueError, match="decay"):
        training.WarmupDecay(0.1, 10, decay="step")


def test_ema_weights_swaps_in_the_average_and_restores(shapes32, tmp_path):
    result = training.train(
        lambda: build_tiny_model(IMAGE, 3, seed=2), TinyLoss(3), shapes32,
        epochs=1, batch_size=8, learning_rate=0.01, ema=True,
        ema_momentum=0.5, strategy="default", jit_compile=False,
        run_dir=str(tmp_path / "ema"))
    model = result.model
    # After fit the model holds the EMA weights (Keras finalizes them);
    # set different raw weights and check the swap.
    averages = [a.numpy() for a in
                model.optimizer._model_variables_moving_average]
    np.testing.assert_allclose(model.trainable_variables[0].numpy(),
                               averages[0])
    raw = [v.numpy() + 1.0 for v in model.trainable_variables]
    for v, value in zip(model.trainable_variables, raw):
        v.assign(value)
    with training.ema_weights(model):
        np.testing.assert_allclose(model.trainable_variables[0].numpy(),
                                   averages[0])
    np.testing.assert_allclose(model.trainable_variables[0].numpy(), raw[0])


class Crash(keras.callbacks.Callback):
    """Simulates a killed job at the start of an epoch."""

    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt("killed")


def test_interrupted_run_resumes_to_the_same_weights(shapes32, tmp_path):
    kwargs = dict(epochs=3, batch_size=8, optimizer="sgd",
                  learning_rate=0.002, ema=True, ema_momentum=0.8,
                  shuffle=False, strategy="default", jit_compile=False)
    straight = training.train(lambda: build_tiny_model(IMAGE, 3, seed=3),
                              TinyLoss(3), shapes32,
                              run_dir=str(tmp_path / "straight"), **kwargs)
    run_dir = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        training.train(lambda: build_tiny_model(IMAGE, 3, seed=3),
                       TinyLoss(3), shapes32, run_dir=run_dir,
                       extra_callbacks=[Crash(at_epoch=2)], **kwargs)
    assert os.path.exists(os.path.join(run_dir, "backup"))
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
    # A fresh process would build a new model with other initial weights:
    resumed = training.train(lambda: build_tiny_model(IMAGE, 3, seed=99),
                             TinyLoss(3), shapes32, run_dir=run_dir,
                             **kwargs)
    for a, b in zip(straight.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert int(resumed.model.optimizer.iterations.numpy()) == 12
    # The run directory is complete and a finished run is not overwritten.
    for name in ("config.json", "history.jsonl", "metrics.json",
                 "model.keras"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert not os.path.exists(os.path.join(run_dir, "backup"))
    with pytest.raises(ValueError, match="finished"):
        training.train(lambda: build_tiny_model(IMAGE, 3), TinyLoss(3),
                       shapes32, run_dir=run_dir, **kwargs)


def test_command_line_help_lists_the_subcommands():
    for package, commands in (("training", ("train", "evaluate", "demo")),
                              ("serving", ("export", "predict"))):
        proc = subprocess.run([sys.executable, "-m", package, "--help"],
                              capture_output=True, text=True, timeout=120,
                              cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        for command in commands:
            assert command in proc.stdout, (package, command)


def test_recipes_wire_each_version_and_reject_bad_input():
    from training import recipes

    recipe = recipes.make_recipe("v5", num_classes=2, image_size=64)
    assert recipe.decode_config["version"] == "v5"
    # yolov5's P3 anchor (10, 13), scaled from 416 to 64 px.
    np.testing.assert_allclose(recipe.decode_config["anchors"][0][0],
                               [10 * 64 / 416, 13 * 64 / 416])
    loss = recipe.build_loss()
    assert loss.num_classes == 2 and tuple(loss.strides) == (8, 16, 32)
    with pytest.raises(ValueError, match="version"):
        recipes.make_recipe("v6")
    with pytest.raises(ValueError, match="image_size"):
        recipes.make_recipe("v5", image_size=100)


def test_hyp_splits_augmentation_and_the_versions_loss_keys(tmp_path):
    from keras_yolo import versions
    from training import cli

    names = versions.get("v5").hyperparameter_names()
    yaml_path = tmp_path / "hyp.yaml"
    yaml_path.write_text("lr0: 0.01\nbox: 0.06\nobj: 0.7\nmosaic: 0.5\n")
    augment, loss = cli._split_hyperparameters(
        [str(yaml_path), "cls=0.3", "degrees=5", "sort_obj_iou=true"], names)
    assert augment == {"mosaic": 0.5, "degrees": 5.0}
    assert loss == {"box": 0.06, "obj": 0.7, "cls": 0.3, "sort_obj_iou": True}
    with pytest.raises(SystemExit, match="lambda_coord"):
        cli._split_hyperparameters(["box=0.1"], versions.get("v1").hyperparameter_names())
    # Without a version (show-data) only augmentation keys exist.
    with pytest.raises(SystemExit, match="unknown key 'box'"):
        cli._hyperparameters(["box=0.1"])


MULTI_WORKER_SCRIPT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import keras
import training
import training.run
from keras_yolo import data
from tiny_detector import build_tiny_model, TinyLoss

class Steps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__(); self.losses = []
    def on_train_batch_end(self, b, logs=None):
        self.losses.append(float(logs["loss"]))

# MultiWorkerMirroredStrategy must exist before any other TF op runs.
strategy = training.make_strategy(sys.argv[4])
steps = Steps()
ds = data.shapes(num_images=32, image_size=64, num_classes=3, seed=0)
res = training.train(
    lambda: build_tiny_model(64, 3, seed=0), TinyLoss(3), ds, epochs=1,
    batch_size=8, optimizer="sgd", learning_rate=0.01, ema=False,
    shuffle=False, strategy=strategy, jit_compile="auto",
    warmup_epochs=0, run_dir=sys.argv[3], extra_callbacks=[steps])
print("RESULT" + json.dumps({"losses": steps.losses,
                             "replicas": res.metrics["replicas"],
                             "jit": res.metrics["jit_compile"],
                             "run_dir": res.run_dir}))
"""


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_from_tf_config_matches_one_device(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    run_dir = str(tmp_path / "mw")
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", MULTI_WORKER_SCRIPT, ROOT, TESTS, run_dir,
             "auto"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env))
    single = subprocess.run(
        [sys.executable, "-c", MULTI_WORKER_SCRIPT, ROOT, TESTS,
         str(tmp_path / "one"), "default"], capture_output=True, text=True,
        timeout=600)
    outs = [p.communicate(timeout=600) for p in procs]
    results = []
    for stdout, stderr in outs + [(single.stdout, single.stderr)]:
        lines = [l for l in stdout.splitlines() if l.startswith("RESULT")]
        assert lines, stderr[-3000:]
        results.append(json.loads(lines[-1][len("RESULT"):]))
    chief, other, one = results
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["jit"] is False and one["jit"] is True
    assert chief["run_dir"] == run_dir
    assert other["run_dir"] == os.path.join(run_dir, "worker-1")
    np.testing.assert_allclose(chief["losses"], one["losses"], rtol=1e-4)
    np.testing.assert_allclose(other["losses"], one["losses"], rtol=1e-4)


def test_short_v5_training_on_shapes_detects(tmp_path):
    """The proof that the pieces detect: small_v5 + YoloV5Loss trained for
    8 epochs on 256 shapes images of 64 px lifts COCO mAP@0.5 on held-out
    images from ~0.001 (untrained) to ~0.08 (measured: 0.079)."""
    from keras_yolo import metrics
    from training import recipes

    options = dict(image_size=64, num_classes=2, max_boxes=10,
                   max_objects=4)
    train_ds = data.shapes(num_images=256, seed=0, **options).cache()
    val_ds = data.shapes(num_images=64, seed=1, **options).cache()
    recipe = recipes.make_recipe("v5", num_classes=2, image_size=64)
    postprocess = recipe.postprocess()

    untrained = recipe.build_model()
    detect = tf.function(lambda x: postprocess(untrained(x, training=False)))
    val_batches = training.batch_dataset(val_ds, 32, shuffle=False)
    before = metrics.evaluate(detect, val_batches, "rel_center_xywh", 2)

    result = training.train(
        recipe.build_model, recipe.build_loss, train_ds, val_data=val_ds,
        epochs=8, batch_size=16, optimizer="adamw", learning_rate=3e-3,
        postprocess=postprocess, run_dir=str(tmp_path / "v5"),
        strategy="default", jit_compile=False, eval_every=100, seed=0)
    after = result.metrics
    assert after["map50"] > 0.03, after
    assert after["map50"] > 10 * max(before["map50"], 1e-3), (before, after)
    assert after["map"] > before["map"]
    history = result.history
    assert history[-1]["loss"] < 0.85 * history[0]["loss"]


def test_time_budget_shortens_the_schedule_to_end_its_decay():
    schedule = training.WarmupDecay(1.0, total_steps=100, warmup_steps=10,
                                    final_fraction=0.01, adjustable=True)
    budget = training.run.TimeBudget(seconds=1.0, epochs=10,
                                     steps_per_epoch=10, schedule=schedule)

    class FakeModel:
        stop_training = False

    budget.set_model(FakeModel())
    budget.on_train_begin()
    budget.on_epoch_begin(0)
    budget._start -= 0.3               # epoch 1 (with tracing) took 0.3 s:
    budget._epoch_start -= 0.3         # no plan from it
    budget.on_epoch_end(0)
    assert budget.planned_epochs == 10 and schedule.total_steps == 100
    budget.on_epoch_begin(1)
    budget._start -= 0.2               # epoch 2 took 0.2 s, 0.5 s spent:
    budget._epoch_start -= 0.2         # 2 more fit -> 4 epochs in all
    budget.on_epoch_end(1)
    assert budget.planned_epochs == 4
    assert schedule.total_steps == 40
    assert float(schedule(40)) == pytest.approx(0.01)   # decay complete
    assert float(schedule(25)) == pytest.approx(0.01 + 0.99 * 0.5)
    assert not budget.model.stop_training
    budget.on_epoch_begin(3)
    budget.on_epoch_end(3)
    assert budget.model.stop_training and budget.stopped_epoch == 4


@pytest.mark.slow
def test_demo_command_writes_a_complete_run_and_its_export_serves(tmp_path):
    out = str(tmp_path / "demo")
    proc = subprocess.run(
        [sys.executable, "-m", "training", "demo", "--out", out,
         "--image-size", "64", "--train-images", "128", "--val-images", "32",
         "--epochs", "3", "--batch-size", "16"],
        capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mAP@0.5" in proc.stdout
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["export"]["core_tf_ops_only"]
    assert 0 <= summary["export"]["tflite_max_abs_diff"] < 1e-3
    for name in ("config.json", "history.jsonl", "metrics.json",
                 "model.keras", "model.decode.json",
                 "export/saved_model/saved_model.pb", "export/model_fp32.tflite",
                 "export/export.json"):
        assert os.path.exists(os.path.join(out, name)), name
    # The CLI round trip: evaluate the run, export again, predict a file.
    proc = subprocess.run([sys.executable, "-m", "training", "evaluate",
                           "--run", out, "--image-size", "64",
                           "--val-images", "32"],
                          capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "evaluate.json")) as f:
        evaluated = json.load(f)
    assert evaluated["num_images"] == 32
    assert evaluated["map50"] == pytest.approx(summary["trained"]["map50"],
                                               abs=1e-6)
    from PIL import Image

    image, _ = data.generate(num_images=1, image_size=64, seed=3)
    Image.fromarray(image[0]).save(tmp_path / "x.png")
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "predict", "--export",
         os.path.join(out, "export"), "--images", str(tmp_path / "x.png"),
         "--tflite", "--out", str(tmp_path / "p.json")],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "p.json") as f:
        assert json.load(f)[0]["image"].endswith("x.png")


def test_sharded_multi_worker_epoch_counts_every_workers_files(monkeypatch):
    import json

    import tensorflow as tf

    from training import strategy as strategy_lib
    from training import trainer

    # Each worker holds ceil(N / W) files; MWMS takes batch / W of each worker's batch per step.
    rows = tf.data.Dataset.range(10).map(lambda i: (tf.zeros([8, 8, 3]), {"labels": tf.zeros([2], tf.int32)}))
    assert trainer._steps_per_epoch(rows, 4, None) == 2
    assert trainer._steps_per_epoch(rows, 4, None, shards=2) == 5
    assert trainer._steps_per_epoch(rows, 4, 7, shards=2) == 7
    assert trainer._file_shards(tf.distribute.get_strategy(), rows) == 1
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert strategy_lib.worker_shard() is None
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    for task, shard in ((("chief", 0), (3, 0)), (("worker", 0), (3, 1)), (("worker", 1), (3, 2))):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task[0],
                                                                                 "index": task[1]}}))
        assert strategy_lib.worker_shard() == shard
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["b:1", "c:1"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert strategy_lib.worker_shard() == (2, 1)
