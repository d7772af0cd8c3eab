"""The recipe's autoanchor: label sizes read from a training dataset, the
anchors kept when they recall the labels, evolved when they do not."""

import numpy as np
import pytest
import tensorflow as tf

from keras_yolo import anchors as anchor_lib
from training import recipes


def _dataset():
    boxes = np.zeros((3, 4, 4), np.float32)
    labels = -np.ones((3, 4), np.int32)
    # rel_center_xywh at 64 px: sizes 8x16, 32x32, 4x40 px (+ padding rows)
    boxes[0, 0], labels[0, 0] = [0.5, 0.5, 0.125, 0.25], 0
    boxes[1, :2], labels[1, :2] = [[0.5, 0.5, 0.5, 0.5],
                                   [0.3, 0.3, 0.0625, 0.625]], 1
    images = np.zeros((3, 64, 64, 3), np.float32)
    return tf.data.Dataset.from_tensor_slices(
        (images, {"boxes": boxes, "labels": labels}))


def test_label_sizes_of_a_dataset_in_pixels():
    wh = recipes.dataset_label_sizes(_dataset(), 64)
    np.testing.assert_allclose(wh, [[8, 16], [32, 32], [4, 40]], atol=1e-4)


def test_autoanchor_keeps_fitting_anchors_and_replaces_poor_ones():
    from keras_yolo import data

    ds = data.shapes(num_images=64, image_size=64, num_classes=2, seed=0)
    scaled = recipes.scaled_anchors("v5", 64)
    kept, report = recipes.autoanchor(scaled, ds, 64)
    assert not report["replaced"] and report["bpr"] > 0.98
    assert report["labels"] > 64
    np.testing.assert_allclose(kept, scaled)
    tiny = np.full((3, 3, 2), 0.5).tolist()   # far below every label
    new, report = recipes.autoanchor(tiny, ds, 64, generations=200)
    assert report["replaced"] and report["bpr"] < 0.5
    assert report["new_bpr"] > 0.98
    wh = recipes.dataset_label_sizes(ds, 64)
    assert anchor_lib.anchor_fitness(wh, new) > 0.6
    recipe = recipes.make_recipe("v5", 2, 64, anchors=new)
    np.testing.assert_allclose(recipe.decode_config["anchors"], new)
    with pytest.raises(ValueError, match="shape"):
        recipes.make_recipe("v5", 2, 64, anchors=[[[1, 1]]])


def test_v5_recipe_loss_gains_are_train_py_scaled():
    # train.py: box 0.05 * 3/nl, cls 0.5 * nc/80 * 3/nl, obj (imgsz/640)^2
    loss = recipes.make_recipe("v5", num_classes=4, image_size=320).build_loss()
    assert loss.box == pytest.approx(0.05)
    assert loss.cls == pytest.approx(0.5 * 4 / 80)
    assert loss.obj == pytest.approx((320 / 640) ** 2)
