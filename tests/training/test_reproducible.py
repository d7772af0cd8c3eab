"""`seed` means reproducible: same seed, same weights and history on CPU."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import training
from keras_yolo import data
from keras_yolo.models import YoloModel

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

from tiny_detector import TinyLoss  # noqa: E402


def build_unseeded(image_size=64, num_classes=3):
    """The tiny detector's layers, initialised from the global seeds only
    (as `recipes` models are)."""
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for filters in (8, 16, 32):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same",
                                activation="relu")(x)
    x = keras.layers.Conv2D(5 + num_classes, 1)(x)
    cells = image_size // 8
    return YoloModel(inputs, keras.layers.Reshape(
        (cells, cells, 1, 5 + num_classes))(x))


def _train(tmp_path, name, seed):
    ds = data.shapes(num_images=24, image_size=64, num_classes=3, seed=0)
    return training.train(
        build_unseeded, TinyLoss(3), ds, epochs=2, batch_size=8,
        optimizer="sgd", learning_rate=0.003, ema=True, shuffle=True,
        seed=seed, strategy="default", jit_compile=False,
        run_dir=str(tmp_path / name))


def test_same_seed_same_weights_and_history(tmp_path):
    a = _train(tmp_path, "a", seed=7)
    b = _train(tmp_path, "b", seed=7)
    c = _train(tmp_path, "c", seed=8)
    for x, y in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    # Another seed: other initial weights and data order, another run.
    differences = [np.abs(x - y).max() for x, y in
                   zip(a.model.get_weights(), c.model.get_weights())]
    assert max(differences) > 1e-2
    assert a.history[0]["loss"] != c.history[0]["loss"]


@pytest.mark.slow
def test_train_command_twice_with_seed_and_deterministic_is_identical(
        tmp_path):
    """The CLI path (a recipe model, unseeded builder, shuffled shapes,
    --deterministic): two runs, bitwise-equal weights and metrics."""
    outputs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        proc = subprocess.run(
            [sys.executable, "-m", "training", "train", "--version", "v5",
             "--image-size", "64", "--train-images", "32", "--val-images",
             "8", "--epochs", "2", "--batch-size", "8", "--seed", "3",
             "--deterministic", "--jit-compile", "false", "--no-autoanchor",
             "--out", out],
            capture_output=True, text=True, timeout=1200, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        model = keras.saving.load_model(os.path.join(out, "model.keras"),
                                        compile=False)
        outputs.append(model.get_weights())
        with open(os.path.join(out, "history.jsonl")) as f:
            outputs.append(f.read().count('"loss"'))
    for x, y in zip(outputs[0], outputs[2]):
        np.testing.assert_array_equal(x, y)
