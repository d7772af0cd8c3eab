"""Augmentations against ultralytics yolov5 7.0.14 itself.

yolov5 draws from Python's `random`; here its module-level `random` is
replaced by `ScriptedRandom`, which answers `uniform(a, b)` with
`a + (b - a) u` for the uniforms we feed our own functions, so both sides
apply the same transform.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import require_peer

from keras_yolo.data import augment

pytestmark = pytest.mark.parity


def yolov5_modules():
    require_peer("yolov5_reference")
    from yolov5.utils import augmentations, dataloaders

    return augmentations, dataloaders


class ScriptedRandom:
    """Stands in for the `random` module inside a yolov5 module."""

    def __init__(self, uniforms, choices=None):
        self.uniforms = list(uniforms)
        self.picks = choices

    def uniform(self, a, b):
        return a + (b - a) * float(self.uniforms.pop(0))

    def choices(self, population, k):
        return list(self.picks)

    def shuffle(self, items):  # keep the order given
        return None

    def __getattr__(self, name):  # anything else: a failure, not a guess
        raise AssertionError(f"unexpected random.{name}")


def scene(height, width, count, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    xy = rng.uniform(0, [width * 0.8, height * 0.8], (count, 2))
    wh = rng.uniform(4, [width * 0.4, height * 0.4], (count, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [width, height])], 1)
    labels = rng.integers(0, 80, count).astype(np.int32)
    return image, boxes.astype(np.float32), labels


def run_yolov5_perspective(augmentations, image, boxes, labels, draws,
                           border, **params):
    targets = np.concatenate([labels[:, None], boxes], 1).astype(np.float64)
    real = augmentations.random
    augmentations.random = ScriptedRandom(draws)
    try:
        return augmentations.random_perspective(
            image.copy(), targets, border=border, **params)
    finally:
        augmentations.random = real


def assert_images_close(ours, reference):
    # cv2 interpolates with 5-bit fixed-point weights: a few levels at most.
    diff = np.abs(ours.astype(np.int32) - reference.astype(np.int32))
    assert diff.mean() < 1.0 and np.mean(diff <= 3) > 0.99, \
        (diff.mean(), np.mean(diff <= 3))


@pytest.mark.parametrize("params", [
    dict(degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0),
    dict(degrees=20.0, translate=0.2, scale=0.3, shear=8.0, perspective=0.0),
    dict(degrees=5.0, translate=0.1, scale=0.2, shear=2.0, perspective=0.001),
])
@pytest.mark.parametrize("border", [(0, 0), (-40, -40)])
def test_random_perspective_matches_yolov5(params, border):
    augmentations, _ = yolov5_modules()
    image, boxes, labels = scene(160, 160, 12, seed=1)
    for s in range(3):
        draws = tf.random.stateless_uniform([8], (s, 11)).numpy()
        ref_image, ref_targets = run_yolov5_perspective(
            augmentations, image, boxes, labels, draws, border, **params)
        out, new, kept = augment.apply_perspective(
            image, boxes, labels, draws, border=border, **params)
        assert out.shape == ref_image.shape
        assert_images_close(out.numpy(), ref_image)
        kept = kept.numpy() >= 0
        assert 0 < len(ref_targets)
        np.testing.assert_array_equal(labels[kept], ref_targets[:, 0])
        np.testing.assert_allclose(new.numpy()[kept], ref_targets[:, 1:],
                                   atol=2e-3)


def test_mosaic_matches_yolov5_load_mosaic():
    """load_mosaic on a stand-in dataset: the canvas, then random_perspective
    with border -S/2, then box_candidates."""
    augmentations, dataloaders = yolov5_modules()
    size = 96
    scenes = [scene(h, w, 5, seed=20 + i) for i, (h, w) in
              enumerate([(96, 72), (60, 96), (96, 96), (80, 50)])]

    class Dataset:
        img_size = size
        mosaic_border = [-size // 2, -size // 2]
        indices = range(4)
        hyp = dict(degrees=3.0, translate=0.1, scale=0.5, shear=2.0,
                   perspective=0.0, copy_paste=0.0)
        labels = []
        segments = [[] for _ in scenes]

        def load_image(self, i):
            image = scenes[i][0]
            return image, image.shape[:2], image.shape[:2]

    for image, boxes, labels in scenes:
        h, w = image.shape[:2]
        xywhn = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2,
                                boxes[:, 2:] - boxes[:, :2]], 1) / [w, h, w, h]
        Dataset.labels.append(np.concatenate([labels[:, None], xywhn], 1))

    draws = tf.random.stateless_uniform([10], (5, 5)).numpy()
    real = (dataloaders.random, augmentations.random)
    dataloaders.random = ScriptedRandom(draws[:2], choices=[1, 2, 3])
    augmentations.random = ScriptedRandom(draws[2:])
    try:
        ref_image, ref_labels = dataloaders.LoadImagesAndLabels.load_mosaic(
            Dataset(), 0)
    finally:
        dataloaders.random, augmentations.random = real

    images = np.full((4, size, size, 3), 114, np.uint8)
    all_boxes = np.zeros((4, 5, 4), np.float32)
    all_labels = np.zeros((4, 5), np.int32)
    sizes = np.zeros((4, 2), np.int32)
    for i, (image, boxes, labels) in enumerate(scenes):
        h, w = image.shape[:2]
        images[i, :h, :w], sizes[i] = image, (h, w)
        all_boxes[i], all_labels[i] = boxes, labels
    center = np.array([int(size / 2 + draws[0] * size),
                       int(size / 2 + draws[1] * size)], np.int32)
    canvas, boxes, labels = augment.mosaic(images, sizes, all_boxes,
                                           all_labels, center, size)
    out, new, kept = augment.apply_perspective(
        canvas, boxes, labels, draws[2:], border=Dataset.mosaic_border,
        **{k: v for k, v in Dataset.hyp.items() if k != "copy_paste"})
    assert out.shape == ref_image.shape == (size, size, 3)
    assert_images_close(out.numpy(), ref_image)
    kept = kept.numpy() >= 0
    np.testing.assert_array_equal(labels.numpy()[kept], ref_labels[:, 0])
    np.testing.assert_allclose(new.numpy()[kept], ref_labels[:, 1:],
                               atol=2e-3)


def test_box_candidates_match_yolov5():
    augmentations, _ = yolov5_modules()
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (400, 2))
    before = np.concatenate([xy, xy + rng.uniform(1, 60, (400, 2))], 1)
    after = np.concatenate([xy, xy + rng.uniform(0, 60, (400, 2))], 1)
    after[:40, 2] = after[:40, 0] + rng.uniform(0, 0.6, 40)
    expected = augmentations.box_candidates(before.T, after.T)
    np.testing.assert_array_equal(
        augment.box_candidates(before, after).numpy(), expected)


def test_hsv_matches_yolov5_augment_hsv():
    augmentations, _ = yolov5_modules()
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    gains = (0.5, 0.7, 0.4)
    np.random.seed(7)
    r = np.random.uniform(-1, 1, 3) * gains + 1
    np.random.seed(7)
    bgr = np.ascontiguousarray(image[..., ::-1])
    augmentations.augment_hsv(bgr, *gains)  # in place
    reference = bgr[..., ::-1]
    ours = augment.adjust_hsv(image, r).numpy()
    # OpenCV quantizes hue to 2 degrees and S, V to uint8 before the gains.
    diff = np.abs(ours.astype(np.int32) - reference.astype(np.int32))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8, \
        (diff.mean(), np.percentile(diff, 99))
