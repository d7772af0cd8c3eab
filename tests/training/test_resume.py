"""Exact resume after SIGKILL mid-epoch, atomic backups, --overwrite."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from training import resume

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)

# One run of a tiny detector: 40 images / batch 8 = 5 steps an epoch, 3
# epochs, a backup every 2 steps, shuffled data, SGD with momentum, EMA,
# warmup + cosine. argv: run_dir, out.npz, kill_at (optimizer step; 0: never),
# overwrite (0/1).
SCRIPT = r"""
import os, signal, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import keras, numpy as np
import training
from keras_yolo import data
from tiny_detector import TinyLoss, build_tiny_model

run_dir, out, kill_at, overwrite = sys.argv[3], sys.argv[4], \
    int(sys.argv[5]), bool(int(sys.argv[6]))

class KillAt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

training.setup_logging()
ds = data.shapes(num_images=40, image_size=64, num_classes=3, seed=0)
result = training.train(
    lambda: build_tiny_model(64, 3, seed=1), TinyLoss(3), ds, epochs=3,
    batch_size=8, optimizer="sgd", learning_rate=0.003, warmup_epochs=1,
    ema=True, ema_momentum=0.7, shuffle=True, seed=5, strategy="default",
    jit_compile=False, backup_every=2, run_dir=run_dir, overwrite=overwrite,
    extra_callbacks=[KillAt()] if kill_at else [])
model = result.model
arrays = {f"model/{i}": v.numpy() for i, v in enumerate(model.variables)}
arrays.update({f"opt/{i}": v.numpy()
               for i, v in enumerate(model.optimizer.variables)})
np.savez(out, **arrays)
"""


def _run(tmp_path, run_dir, out, kill_at=0, overwrite=False):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), ROOT, TESTS, str(run_dir), str(out),
         str(kill_at), str(int(overwrite))],
        capture_output=True, text=True, timeout=300, cwd=ROOT)


def _history(run_dir):
    with open(os.path.join(run_dir, "history.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_sigkill_mid_epoch_then_same_command_matches_uninterrupted(tmp_path):
    run = tmp_path / "run"
    straight = _run(tmp_path, run, tmp_path / "straight.npz")
    assert straight.returncode == 0, straight.stderr[-3000:]
    straight_history = _history(run)
    assert (run / "model.keras").exists()

    # The same directory again with --overwrite, SIGKILLed at optimizer
    # step 7 = epoch 2, step 2 (last backup: step 6 = epoch 2, step 1).
    killed = _run(tmp_path, run, tmp_path / "unused.npz", kill_at=7,
                  overwrite=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # None of the finished run's files beside the new run's partial ones.
    for name in ("model.keras", "metrics.json", "best.weights.h5"):
        assert not (run / name).exists(), name
    arrays, meta = resume.load_state(str(run / "backup" / "state.npz"))
    assert (meta["epoch"], meta["step"], meta["iterations"]) == (1, 1, 6)
    assert [h["epoch"] for h in meta["history"]] == [1]
    assert not [n for n in os.listdir(run / "backup") if ".tmp" in n]

    # Rerun the same command: resumes, and ends where the straight run did.
    resumed = _run(tmp_path, run, tmp_path / "resumed.npz", overwrite=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    with np.load(tmp_path / "straight.npz") as a, \
            np.load(tmp_path / "resumed.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert any(k.startswith("opt/") for k in a.files)
        for key in a.files:   # weights, momentum, EMA, iterations
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6,
                                       err_msg=key)
        iterations = [k for k in a.files if a[k].shape == ()
                      and a[k].dtype.kind == "i"]
        assert any(int(b[k]) == 15 for k in iterations)
    resumed_history = _history(run)
    assert [h["epoch"] for h in resumed_history] == [1, 2, 3]
    for x, y in zip(straight_history, resumed_history):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
        assert y["lr"] == pytest.approx(x["lr"], rel=1e-6)
    assert not (run / "backup").exists()


def test_a_kill_while_writing_keeps_the_previous_backup(tmp_path):
    path = str(tmp_path / "state.npz")
    resume.save_state(path, {"w": np.arange(3.0)}, {"step": 1})
    # A writer killed half-way (SIGKILL in a child process).
    code = (
        "import os, signal, sys, numpy as np\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from training import resume\n"
        "def half(f, **arrays):\n"
        "    f.write(b'PK\\x03\\x04 partial'); f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "np.savez = half\n"
        f"resume.save_state({path!r}, {{'w': np.zeros(3)}}, {{'step': 2}})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    arrays, meta = resume.load_state(path)
    assert meta == {"step": 1}
    np.testing.assert_array_equal(arrays["w"], np.arange(3.0))
    # An exception during the write: same, and no temporary file is left.
    original = np.savez

    def failing(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    np.savez = failing
    try:
        with pytest.raises(OSError, match="disk full"):
            resume.save_state(path, {"w": np.ones(3)}, {"step": 3})
    finally:
        np.savez = original
    assert resume.load_state(path)[1] == {"step": 1}
    # Only the killed writer's temporary file remains beside the backup.
    leftovers = sorted(set(os.listdir(tmp_path)) - {"state.npz"})
    assert len(leftovers) == 1 and ".tmp-" in leftovers[0], leftovers


def test_a_corrupt_backup_is_named(tmp_path):
    path = tmp_path / "state.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="state.npz"):
        resume.load_state(str(path))


def test_epoch_order_is_a_function_of_seed_and_epoch():
    import tensorflow as tf

    def fresh():   # a new process' pipeline: its own seed generators
        return tf.data.Dataset.range(10).map(
            lambda i: (tf.fill([2, 2, 3], i), i))

    def order(first, seed=3):
        return [int(b[1][0]) for b in resume.epoch_batches(
            fresh(), 5, seed, first, 3)]

    full = order(0)
    assert len(full) == 6
    assert order(1) == full[2:] and order(2) == full[4:]
    assert full[:2] != full[2:4] or full[2:4] != full[4:]   # reshuffled
    assert order(0, seed=4) != full


def test_epoch_order_of_a_pipeline_that_reshuffles_each_iteration():
    # As keras_yolo.data.load(shuffle=True, augment=True): a seeded shuffle
    # and per-sample random draws that change with each new iterator.
    import tensorflow as tf

    def fresh():
        indices = tf.data.Dataset.range(12).shuffle(
            12, seed=1, reshuffle_each_iteration=True)
        draws = tf.data.Dataset.random(seed=2,
                                       rerandomize_each_iteration=True)
        return tf.data.Dataset.zip(indices, draws).map(
            lambda i, r: (tf.fill([2, 2, 3], i), r % 1000))

    def epochs(first):
        return [tuple(b[1].numpy()) for b in resume.epoch_batches(
            fresh(), 4, 0, first, 3, shuffle=False)]

    full = epochs(0)
    assert len(full) == 9 and len(set(full)) == 9
    assert epochs(1) == full[3:]
    assert epochs(2) == full[6:]


def _nan_run(tmp_path, kind, at_step):
    """3 steps an epoch; from optimizer step `at_step` on the loss (kind
    "loss") or only its gradient (kind "gradient") is NaN."""
    import hashlib

    import keras
    import tensorflow as tf

    import training
    from keras_yolo import data
    from keras_yolo.layers import NonMaxSuppression

    sys.path.insert(0, TESTS)
    from tiny_detector import TinyDecode, TinyLoss, build_tiny_model

    class PoisonedLoss(TinyLoss):
        def __init__(self):
            super().__init__(3)
            self.poisoned = tf.Variable(False, trainable=False)

        def call(self, y_true, y_pred):
            base = super().call(y_true, y_pred)
            if kind == "loss":
                bad = lambda: tf.constant(float("nan"))  # noqa: E731
            else:  # value sqrt(0) = 0, gradient 0 / 0 = NaN
                bad = lambda: tf.sqrt(  # noqa: E731
                    0.0 * tf.reduce_sum(tf.cast(y_pred, tf.float32)))
            return base + tf.cond(self.poisoned, bad, lambda: 0.0)

    loss = PoisonedLoss()
    best_hash = {}

    class PoisonAt(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            loss.poisoned.assign(step + 1 >= at_step)
            best = os.path.join(run_dir, "best.weights.h5")
            if step + 1 == at_step and os.path.exists(best):
                with open(best, "rb") as f:
                    best_hash["before"] = hashlib.sha1(f.read()).hexdigest()

    run_dir = str(tmp_path / kind)
    ds = data.shapes(num_images=24, image_size=64, num_classes=3, seed=0)
    nms = NonMaxSuppression(bounding_box_format="rel_center_xywh",
                            max_det=20)
    decode = TinyDecode()
    with pytest.raises(FloatingPointError) as error:
        training.train(
            lambda: build_tiny_model(64, 3, seed=1), loss, ds,
            val_data=ds.take(8), postprocess=lambda raw: nms(decode(raw)),
            num_classes=3, epochs=4, batch_size=8, optimizer="sgd",
            learning_rate=0.002, ema=True, strategy="default",
            jit_compile=False, backup_every=2, run_dir=run_dir,
            extra_callbacks=[PoisonAt()])
    best = os.path.join(run_dir, "best.weights.h5")
    with open(best, "rb") as f:
        assert hashlib.sha1(f.read()).hexdigest() == best_hash["before"]
    return str(error.value), run_dir


def test_a_nan_loss_stops_the_run_naming_step_terms_and_checkpoint(
        tmp_path):
    message, run_dir = _nan_run(tmp_path, "loss", at_step=5)
    assert "non-finite loss at epoch 2 step 2 (optimizer step 5)" in message
    assert "loss=nan" in message
    backup = os.path.join(run_dir, "backup", "state.npz")
    # The last backup before step 5: step 4 = epoch 2, step 1.
    assert f"last good checkpoint: {backup} (epoch 2, step 1" in message
    assert os.path.join(run_dir, "best.weights.h5") in message
    arrays, meta = resume.load_state(backup)
    assert meta["iterations"] == 4
    assert all(np.isfinite(a).all() for a in arrays.values()
               if a.dtype.kind == "f")
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))


def test_a_nan_gradient_with_a_finite_loss_stops_at_its_step(tmp_path):
    message, run_dir = _nan_run(tmp_path, "gradient", at_step=7)
    assert ("non-finite weights or optimizer slots after the update (a "
            "NaN/Inf gradient) at epoch 3 step 1 (optimizer step 7)"
            ) in message
    # Epoch 2 ended at step 6: its end-of-epoch backup is the last good one.
    assert "(epoch 2, end" in message
    arrays, meta = resume.load_state(
        os.path.join(run_dir, "backup", "state.npz"))
    assert (meta["epoch"], meta["step"], meta["iterations"]) == (2, 0, 6)


def test_shuffle_buffer_holds_at_most_a_gigabyte_of_decoded_samples():
    from training import resume

    def samples(side, count):
        spec = (tf.TensorSpec((side, side, 3), tf.float32),
                {"boxes": tf.TensorSpec((50, 4), tf.float32), "labels": tf.TensorSpec((50,), tf.int32)})
        return tf.data.Dataset.range(count).map(
            lambda i: tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), spec))

    # 640 px float32 photo + 50 rows = 4,915,200 + 1,000 bytes -> 218 fit in 2**30.
    assert resume.shuffle_buffer_size(samples(640, 5000)) == (1 << 30) // (640 * 640 * 3 * 4 + 50 * 5 * 4)
    assert resume.shuffle_buffer_size(samples(32, 300)) == 300   # small samples: the whole dataset


def test_a_dataset_that_shards_itself_keeps_its_policy():
    from training import resume

    own = tf.data.Options()
    own.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = tf.data.Dataset.range(4).with_options(own)
    assert resume.distribution_options(ds).experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.OFF
    assert resume.distribution_options(tf.data.Dataset.range(4)).experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.DATA
