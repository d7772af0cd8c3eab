"""Mosaic partners read by index: uniform over the whole split (ultralytics'
`random.choices`), deterministic under a seed, nothing decoded held."""

import numpy as np
import tensorflow as tf

from keras_yolo.data import augment

NO_COLOUR = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}


def test_partners_are_uniform_over_all_indices_and_seeded():
    seeds = tf.random.experimental.stateless_split(tf.constant([1, 2],
                                                               tf.int64),
                                                   4000)
    draws = tf.stack([augment.mosaic_partners(s, 10) for s in seeds]).numpy()
    assert draws.shape == (4000, 3) and draws.min() == 0 and draws.max() == 9
    counts = np.bincount(draws.ravel(), minlength=10)
    # 12000 draws, 1200 expected per index (sd ~33): chi-square with 9
    # degrees of freedom stays below its 0.999 quantile, 27.9.
    chi2 = ((counts - 1200.0) ** 2 / 1200.0).sum()
    assert chi2 < 27.9, counts
    # The three of one output are independent draws (with replacement).
    assert (draws[:, 0] == draws[:, 1]).mean() < 0.15
    again = augment.mosaic_partners(seeds[5], 10).numpy()
    np.testing.assert_array_equal(again, draws[5])
    assert not np.array_equal(augment.mosaic_partners(seeds[6], 10).numpy(),
                              draws[5]) or not np.array_equal(
        augment.mosaic_partners(seeds[7], 10).numpy(), draws[5])


def _coded_read_sample(count, size=64):
    """Sample i: a `size` square of colour (3 i + 10, 200, 50), one box."""
    def read_sample(i):
        value = tf.cast(3 * i + 10, tf.uint8)
        pixel = tf.stack([value, tf.constant(200, tf.uint8),
                          tf.constant(50, tf.uint8)])
        image = tf.tile(pixel[None, None], [size, size, 1])
        return image, {"boxes": tf.constant([[0.0, 0.0, size, size]]),
                       "labels": tf.cast(tf.reshape(i, [1]), tf.int32)}
    return read_sample


def _visible(image):
    """Ids of the coded samples visible in an output image."""
    coded = image[..., 1] == 200
    return set(((image[..., 0][coded].astype(int) - 10) // 3).tolist())


def _pipeline(seed, count=64, size=64):
    hyp = dict(NO_COLOUR, translate=0.0, scale=0.0, fliplr=0.0)
    return augment.training_pipeline(
        tf.data.Dataset.range(count), size, seed=seed, hyperparameters=hyp,
        shuffle_buffer=0, read_sample=_coded_read_sample(count, size),
        num_samples=count)


def test_mosaics_draw_partners_from_the_whole_list_not_a_pool():
    outputs = list(_pipeline(seed=3).as_numpy_iterator())
    assert len(outputs) == 64
    partners, same_block = [], 0
    for k, (image, target) in enumerate(outputs):
        seen = _visible(image)
        # Every kept box belongs to an image that is visible.
        assert set(target["labels"].tolist()) <= seen
        others = seen - {k}
        partners += sorted(others)
        same_block += sum(j // 8 == k // 8 for j in others)
    # A pool of 8 consecutive images would put every partner in the
    # output's own block of 8; uniform partners land there 1 time in 8.
    assert same_block / len(partners) < 0.3
    # ~3 visible partners an output over 64 ids: most ids show up.
    assert len(set(partners)) >= 40


def test_partner_pipeline_is_deterministic_under_a_seed():
    first = [image for image, _ in _pipeline(seed=3).as_numpy_iterator()]
    second = [image for image, _ in _pipeline(seed=3).as_numpy_iterator()]
    other = [image for image, _ in _pipeline(seed=4).as_numpy_iterator()]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_outputs_finished_alone_equal_the_pooled_finish():
    # mixup/cutmix 0 as numbers: each output is flipped and coloured alone;
    # as a tf.Variable the pipeline takes the pooled path (partners could be
    # switched on later): the same draws, the same pixels.
    count, size = 16, 64

    def run(mixup):
        hyp = {"mixup": mixup, "hsv_h": 0.1, "hsv_s": 0.7, "hsv_v": 0.4}
        ds = augment.training_pipeline(
            tf.data.Dataset.range(count), size, seed=5, hyperparameters=hyp,
            shuffle_buffer=0, read_sample=_coded_read_sample(count, size),
            num_samples=count)
        return list(ds.as_numpy_iterator())

    alone, pooled = run(0.0), run(tf.Variable(0.0))
    assert len(alone) == len(pooled) == count
    for (a, ya), (b, yb) in zip(alone, pooled):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        np.testing.assert_array_equal(ya["labels"], yb["labels"])
        np.testing.assert_allclose(ya["boxes"], yb["boxes"])
