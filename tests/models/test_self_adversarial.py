"""Self-Adversarial Training in `YoloModel`'s train step (YOLOv4's freebie)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.losses import YoloV2Loss
from tiny_detector import build_tiny_model

EPS = 4 / 255
IMAGE = 64


def make_loss():
    # One level of stride 8 with one anchor, as the tiny detector's head;
    # YOLOv2's loss keeps state (`seen`), so double counting would show.
    return YoloV2Loss(num_classes=3, anchors=[[[12.0, 16.0]]], strides=(8,),
                      darknet_compat=True)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (4, IMAGE, IMAGE, 3)).astype(np.float32)
    boxes = np.zeros((4, 3, 4), np.float32)
    boxes[..., :2] = rng.uniform(0.2, 0.8, (4, 3, 2))
    boxes[..., 2:] = rng.uniform(0.1, 0.4, (4, 3, 2))
    labels = np.array([[0, 1, -1], [2, -1, -1], [1, 1, 0], [-1, -1, -1]],
                      np.int32)
    return images, {"boxes": boxes, "labels": labels}


def compiled(probability=1.0, epsilon=EPS, jit_compile=False):
    model = build_tiny_model(IMAGE, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=make_loss(),
                  jit_compile=jit_compile, self_adversarial=epsilon,
                  self_adversarial_probability=probability)
    return model


def empty_truth_loss(model, images, y):
    empty = {"boxes": np.zeros_like(y["boxes"]),
             "labels": -np.ones_like(y["labels"])}
    loss = make_loss()
    return loss.components(empty, model(images, training=False))


def test_a_step_trains_on_the_image_moved_down_the_empty_truth_loss():
    images, y = batch()
    sat = compiled()
    plain = build_tiny_model(IMAGE, seed=0)
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss=make_loss())
    # The independent first pass: the gradient of the empty-truth loss
    # w.r.t. the pixels, by a tape on the untouched weights.
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.add_n(list(empty_truth_loss(plain, x, y).values()))
    gradient = tape.gradient(value, x).numpy()
    expected = np.clip(images - EPS * np.sign(gradient), 0, 1)
    sat.train_on_batch(images, y)
    plain.train_on_batch(expected, y)
    for a, b in zip(sat.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # State advanced once: the first pass does not count the batch.
    assert float(sat.loss.seen.numpy()) == float(plain.loss.seen.numpy()) == 4


def test_the_altered_images_deceive_the_network_into_seeing_less():
    images, y = batch(1)
    model = compiled()
    altered = model.self_adversarial_images(tf.constant(images), y).numpy()
    moved = np.abs(altered - images)
    assert moved.max() <= EPS + 1e-6 and np.mean(moved > EPS / 2) > 0.5
    assert altered.min() >= 0 and altered.max() <= 1
    before = empty_truth_loss(model, images, y)
    after = empty_truth_loss(model, altered, y)
    # Towards "no object": the objectness loss against an empty truth falls.
    assert float(after["noobj"]) < float(before["noobj"])


def test_probability_zero_is_plain_training_and_one_always_alters():
    images, y = batch(2)
    never = compiled(probability=0.0)
    plain = build_tiny_model(IMAGE, seed=0)
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss=make_loss())
    never.train_on_batch(images, y)
    plain.train_on_batch(images, y)
    for a, b in zip(never.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    always = compiled(probability=1.0)
    altered = [always.self_adversarial_images(tf.constant(images), y).numpy()
               for _ in range(3)]
    assert all(np.abs(a - images).max() > 0 for a in altered)


def test_half_of_the_batches_are_altered_by_default():
    images, y = batch(3)
    model = build_tiny_model(IMAGE, seed=0)
    model.compile(optimizer="sgd", loss=make_loss(), self_adversarial=EPS)
    fn = tf.function(lambda x: model.self_adversarial_images(x, y))
    altered = [np.abs(fn(tf.constant(images)).numpy() - images).max() > 0
               for _ in range(200)]
    assert np.mean(altered) == pytest.approx(0.5, abs=0.1)


def test_xla_step_equals_graph_step():
    images, y = batch(4)
    graph, xla = compiled(), compiled(jit_compile=True)
    graph.train_on_batch(images, y)
    xla.train_on_batch(images, y)
    for a, b in zip(graph.get_weights(), xla.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bad_settings_are_named():
    model = build_tiny_model(IMAGE, seed=0)
    with pytest.raises(ValueError, match="self_adversarial"):
        model.compile(optimizer="sgd", loss=make_loss(), self_adversarial=-1)
    with pytest.raises(ValueError, match="self_adversarial_probability"):
        model.compile(optimizer="sgd", loss=make_loss(), self_adversarial=EPS,
                      self_adversarial_probability=2)


def test_the_trainer_and_command_line_turn_it_on(tmp_path):
    import json

    from keras_yolo import data
    from training import cli
    from training.trainer import train

    parser = __import__("argparse").ArgumentParser()
    cli.add_train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--self-adversarial", "0.01"])
    assert (args.self_adversarial, args.self_adversarial_probability) == (0.01, 0.5)

    result = train(lambda: build_tiny_model(IMAGE, seed=0), make_loss,
                   data.shapes(16, image_size=IMAGE, max_boxes=4), epochs=1,
                   batch_size=8, optimizer="adam", jit_compile=False,
                   run_dir=str(tmp_path / "run"), self_adversarial=EPS,
                   self_adversarial_probability=1.0, progress=False)
    assert result.model.self_adversarial == EPS
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["train"]["self_adversarial"] == EPS
