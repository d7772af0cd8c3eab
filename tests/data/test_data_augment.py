"""Augmentations keep boxes on their objects (keras_yolo.data.augment).

Every scene is solid rectangles of distinct, fully saturated hues on black;
object `l` has the hue `PALETTE[l]`. After an augmentation, the pixels of an
output box's hue (a direction in RGB, so MixUp's dimming keeps it) must have
their bounding box at the output box, and lie inside it.
"""

import colorsys

import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.data import augment
from keras_yolo.data.augment import color, mix

NUM_COLOURS = 24
PALETTE = np.array([colorsys.hsv_to_rgb(i / NUM_COLOURS, 1.0, 1.0)
                    for i in range(NUM_COLOURS)]) * 255
TOLERANCE = 2.5  # pixels: bilinear edges, rounding of the warped corners
# Slivers thinner than this are bilinear blends with their neighbours (black,
# or the grey border fill) whose hue can no longer be read.
MIN_CHECKED_SIDE = 4.0


def scene(height, width, first_label, count=3, seed=0):
    """An image with `count` separated rectangles, labels from `first_label`."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    boxes = []
    cols = count
    for j in range(count):
        # One vertical band per object keeps them apart; 4 px margins.
        band = width / cols
        x1 = int(j * band + 4 + rng.integers(0, max(1, band / 4)))
        x2 = int((j + 1) * band - 4 - rng.integers(0, max(1, band / 4)))
        y1 = int(4 + rng.integers(0, height / 3))
        y2 = int(height - 4 - rng.integers(0, height / 3))
        image[y1:y2, x1:x2] = PALETTE[first_label + j].round()
        boxes.append([x1, y1, x2, y2])
    labels = np.arange(first_label, first_label + count, dtype=np.int32)
    return image, np.array(boxes, np.float32), labels


def colour_mask(image, label, min_cosine=0.98, min_norm=60.0):
    """Pixels whose nearest palette hue (by angle in RGB) is `label`'s."""
    pixels = np.asarray(image, np.float32)
    unit = PALETTE / np.linalg.norm(PALETTE, axis=-1, keepdims=True)
    norm = np.linalg.norm(pixels, axis=-1)
    cosine = (pixels @ unit.T) / (norm[..., None] + 1e-6)
    return ((cosine.argmax(-1) == label) & (cosine[..., label] >= min_cosine)
            & (norm >= min_norm))


def assert_boxes_on_objects(image, boxes, labels, tolerance=TOLERANCE,
                            min_coverage=0.97, rotated=False):
    """Each box is the tight box of its colour's pixels, which lie inside it.

    `rotated`: a rotated or sheared object cut by the image border keeps the
    clipped envelope of all its corners (ultralytics' rule), which contains
    the tight box of its visible pixels but can be larger, or even hold only
    an empty corner of the envelope; such boxes are checked for containment
    only.
    """
    image, boxes, labels = (np.asarray(image), np.asarray(boxes),
                            np.asarray(labels))
    height, width = image.shape[:2]
    valid = labels >= 0
    assert valid.any(), "no box left to check"
    checked = 0
    for box, label in zip(boxes[valid], labels[valid]):
        if (box[2:] - box[:2]).min() < MIN_CHECKED_SIDE:
            continue
        checked += 1
        mask = colour_mask(image, label)
        cut = (box[:2].min() <= 0) | (box[2] >= width) | (box[3] >= height)
        if rotated and cut and not mask.any():
            continue
        assert mask.sum() > 0, f"label {label}: no pixel of its colour"
        ys, xs = np.nonzero(mask)
        tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        if rotated and cut:
            assert (tight[:2] >= box[:2] - tolerance).all() and \
                (tight[2:] <= box[2:] + tolerance).all(), f"label {label}"
        else:
            np.testing.assert_allclose(tight, box, atol=tolerance,
                                       err_msg=f"label {label}")
        x1, y1 = np.floor(box[:2] - 1).astype(int)
        x2, y2 = np.ceil(box[2:] + 1).astype(int)
        inside = mask[max(y1, 0):y2, max(x1, 0):x2].sum()
        assert inside / mask.sum() >= min_coverage, f"label {label}"
    assert checked, "only slivers to check"


def dataset_of(scenes):
    def gen():
        for image, boxes, labels in scenes:
            yield image, {"boxes": boxes, "labels": labels}

    spec = (tf.TensorSpec([None, None, 3], tf.uint8),
            {"boxes": tf.TensorSpec([None, 4], tf.float32),
             "labels": tf.TensorSpec([None], tf.int32)})
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def eight_scenes():
    sizes = [(120, 160), (160, 100), (90, 90), (160, 160), (100, 140),
             (140, 120), (80, 150), (150, 80)]
    return [scene(h, w, 3 * i, seed=i) for i, (h, w) in enumerate(sizes)]


NO_COLOUR = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}


# ---------------------------------------------------------------- candidates

def reference_box_candidates(box1, box2, wh_thr=2, ar_thr=100, area_thr=0.1,
                             eps=1e-16):
    """ultralytics' formula, transcribed on (4, n) arrays as it is written."""
    box1, box2 = np.asarray(box1, np.float64).T, np.asarray(box2, np.float64).T
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return ((w2 > wh_thr) & (h2 > wh_thr)
            & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr))


def test_box_candidates_hand_cases():
    before = [[0, 0, 100, 100]] * 6
    after = [[0, 0, 100, 100],   # unchanged: kept
             [0, 0, 2, 50],      # 2 px wide: not > wh_thr
             [0, 0, 40, 24],     # 9.6% of the area left: dropped
             [0, 0, 40, 26],     # 10.4%: kept
             [0, 0, 300, 2.9],   # aspect ratio 103 > 100: dropped
             [10, 10, 13, 13]]   # 3 x 3 > wh_thr but 0.09% of the area
    expected = [True, False, False, True, False, False]
    got = augment.box_candidates(before, after).numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, reference_box_candidates(before, after))


def test_box_candidates_match_ultralytics_on_random_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (500, 2))
    before = np.concatenate([xy, xy + rng.uniform(1, 60, (500, 2))], 1)
    after = np.concatenate([xy, xy + rng.uniform(0, 60, (500, 2))], 1)
    after[:50, 3] = after[:50, 1] + rng.uniform(0, 0.5, 50)  # thin ones
    got = augment.box_candidates(before, after).numpy()
    np.testing.assert_array_equal(got, reference_box_candidates(before, after))
    assert 0 < got.sum() < len(got)


# ---------------------------------------------------------------- geometry

@pytest.mark.parametrize("params", [
    dict(degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0),
    dict(degrees=30.0, translate=0.1, scale=0.3, shear=0.0, perspective=0.0),
    dict(degrees=10.0, translate=0.2, scale=0.2, shear=10.0, perspective=0.0),
    dict(degrees=5.0, translate=0.1, scale=0.2, shear=5.0, perspective=0.001),
])
def test_random_perspective_keeps_boxes_on_objects(params):
    image, boxes, labels = scene(128, 160, 0, count=3, seed=1)
    checked = 0
    for s in range(6):
        out, new, kept = augment.random_perspective(
            image, boxes, labels, seed=(s, 7), **params)
        assert out.shape == (128, 160, 3)
        # A rotated rectangle's envelope is the tight box of its pixels.
        assert_boxes_on_objects(out, new, kept, tolerance=3.0, rotated=True)
        checked += int((kept.numpy() >= 0).sum())
    assert checked >= 12


def test_random_perspective_border_shrinks_canvas():
    image, boxes, labels = scene(128, 128, 0, seed=2)
    out, new, kept = augment.random_perspective(
        image, boxes, labels, seed=(3, 4), scale=0.0, translate=0.0,
        border=(-32, -32))
    assert out.shape == (64, 64, 3)
    # scale 0, translate 0: the centre 64 x 64 crop, boxes moved by -32.
    np.testing.assert_array_equal(out.numpy(), image[32:96, 32:96])
    expected = np.clip(boxes - 32, 0, 64)
    valid = kept.numpy() >= 0
    np.testing.assert_allclose(new.numpy()[valid], expected[valid], atol=1e-4)


@pytest.mark.parametrize("flip", ["left_right", "up_down"])
def test_flips_keep_boxes_on_objects(flip):
    image, boxes, labels = scene(96, 128, 3, seed=3)
    fn = getattr(augment, f"flip_{flip}")
    out, new = fn(tf.constant(image), tf.constant(boxes))
    assert_boxes_on_objects(out, new, labels, tolerance=0.0)
    axis = 1 if flip == "left_right" else 0
    np.testing.assert_array_equal(out.numpy(), np.flip(image, axis))


def test_random_flip_follows_its_probabilities():
    image, boxes, labels = scene(48, 64, 0, seed=3)
    image, boxes = tf.constant(image), tf.constant(boxes)
    out, new = augment.random_flip(image, boxes, (1, 2), fliplr=1.0,
                                   flipud=1.0)
    both = augment.flip_up_down(*augment.flip_left_right(image, boxes))
    np.testing.assert_array_equal(out.numpy(), both[0].numpy())
    np.testing.assert_allclose(new.numpy(), both[1].numpy())
    out, new = augment.random_flip(image, boxes, (1, 2), fliplr=0.0)
    np.testing.assert_array_equal(out.numpy(), image.numpy())


def test_random_hsv_uses_ultralytics_gains():
    image, _, _ = scene(32, 48, 0, seed=3)
    gains = color.hsv_gains(tf.random.stateless_uniform([3], (4, 5)),
                            0.1, 0.7, 0.4)
    assert np.all(np.abs(gains.numpy() - 1) <= [0.1, 0.7, 0.4])
    np.testing.assert_array_equal(
        augment.random_hsv(image, (4, 5), 0.1, 0.7, 0.4).numpy(),
        augment.adjust_hsv(image, gains).numpy())


def test_keras_random_flip_agrees_with_ours():
    """keras.layers.RandomFlip handles xyxy boxes correctly in Keras 3.15;
    ours is kept for stateless per-element seeding inside tf.data."""
    import keras

    image, boxes, labels = scene(64, 96, 0, seed=4)
    layer = keras.layers.RandomFlip("horizontal", bounding_box_format="xyxy",
                                    seed=0)
    data = {"images": image[None].astype(np.float32),
            "bounding_boxes": {"boxes": boxes[None], "labels": labels[None]}}
    ours_image, ours_boxes = augment.flip_left_right(tf.constant(image),
                                                     tf.constant(boxes))
    for _ in range(6):  # until the layer flips
        out = layer(data, training=True)
        if not np.array_equal(np.asarray(out["images"][0]), image):
            break
    np.testing.assert_array_equal(np.asarray(out["images"][0]),
                                  ours_image.numpy())
    np.testing.assert_allclose(np.asarray(out["bounding_boxes"]["boxes"][0]),
                               ours_boxes.numpy(), atol=1e-4)


def test_resize_long_side_matches_ultralytics_sizes():
    image, boxes, labels = scene(90, 137, 0, seed=5)
    out, new = augment.resize_long_side(tf.constant(image), tf.constant(boxes),
                                        64)
    r = 64 / 137
    assert out.shape[:2] == (int(np.ceil(90 * r)), 64)
    assert_boxes_on_objects(out, new, labels, tolerance=1.5)


# ---------------------------------------------------------------- mosaic

def test_mosaic_places_images_and_boxes():
    scenes = [scene(h, w, 3 * i, seed=10 + i) for i, (h, w) in
              enumerate([(64, 48), (40, 64), (64, 64), (50, 30)])]
    images = np.full((4, 64, 64, 3), 114, np.uint8)
    boxes = np.zeros((4, 3, 4), np.float32)
    labels = np.zeros((4, 3), np.int32)
    sizes = np.zeros((4, 2), np.int32)
    for i, (image, b, l) in enumerate(scenes):
        h, w = image.shape[:2]
        images[i, :h, :w] = image
        boxes[i], labels[i], sizes[i] = b, l, (h, w)
    canvas, out_boxes, out_labels = augment.mosaic(
        tf.constant(images), tf.constant(sizes), tf.constant(boxes),
        tf.constant(labels), tf.constant([60, 70]), 64)
    canvas = canvas.numpy()
    assert canvas.shape == (128, 128, 3)
    # Top-left image ends at the centre (yc=60, xc=70): rows 0..59 hold its
    # last 60 rows, columns 22..69 its 48 columns.
    np.testing.assert_array_equal(canvas[0:60, 22:70], scenes[0][0][4:64])
    np.testing.assert_array_equal(canvas[60:110, 70:100], scenes[3][0])
    np.testing.assert_array_equal(canvas[20:60, 70:128], scenes[1][0][:, :58])
    np.testing.assert_array_equal(canvas[60:124, 6:70], scenes[2][0])
    keep = augment.box_candidates(out_boxes, out_boxes).numpy()
    assert_boxes_on_objects(canvas, out_boxes,
                            np.where(keep, out_labels, -1), tolerance=0.0)


def test_pipeline_mosaic_keeps_boxes_on_objects():
    ds = augment.training_pipeline(dataset_of(eight_scenes()), 128, seed=3,
                                   hyperparameters=dict(NO_COLOUR))
    count = 0
    for image, target in ds:
        assert image.shape == (128, 128, 3) and image.dtype == tf.uint8
        labels = target["labels"].numpy()
        assert len(set(labels)) == len(labels), "companions repeat an image"
        assert_boxes_on_objects(image, target["boxes"], labels)
        count += 1
    assert count == 8  # one output per input image


def test_pipeline_geometry_with_rotation_shear_and_flips():
    hyp = dict(NO_COLOUR, degrees=15.0, shear=5.0, flipud=0.5, fliplr=0.5)
    ds = augment.training_pipeline(dataset_of(eight_scenes()), 128, seed=5,
                                   hyperparameters=hyp)
    for image, target in ds:
        assert_boxes_on_objects(image, target["boxes"], target["labels"],
                                tolerance=3.0, rotated=True)


def test_pipeline_without_mosaic_is_the_letterbox():
    """mosaic 0, no warp, no flip, no colour: exactly the letterboxed image."""
    hyp = dict(NO_COLOUR, mosaic=0.0, translate=0.0, scale=0.0, fliplr=0.0)
    scenes = [scene(h, w, 3 * i, seed=i) for i, (h, w) in
              enumerate([(120, 160), (160, 100), (160, 160), (77, 160)])]
    ds = augment.training_pipeline(dataset_of(scenes), 160, seed=0,
                                   hyperparameters=hyp, shuffle_buffer=0)
    for (image, target), (source, boxes, labels) in zip(ds, scenes):
        h, w = source.shape[:2]  # longer side 160: the resize is identity
        top, left = (160 - h) // 2, (160 - w) // 2
        expected = np.full((160, 160, 3), 114, np.uint8)
        expected[top:top + h, left:left + w] = source
        np.testing.assert_array_equal(image.numpy(), expected)
        np.testing.assert_allclose(target["boxes"].numpy(),
                                   boxes + [left, top, left, top], atol=1e-4)
        np.testing.assert_array_equal(target["labels"].numpy(), labels)


def test_mosaic_probability_is_switched_by_a_variable():
    mosaic = tf.Variable(1.0, trainable=False)
    # Any hyperparameter may be a variable.
    hyp = dict(NO_COLOUR, mosaic=mosaic, translate=0.0, scale=0.0, fliplr=0.0,
               degrees=tf.Variable(0.0), hsv_v=tf.Variable(0.0),
               mixup=tf.Variable(0.0))
    ds = augment.training_pipeline(dataset_of(eight_scenes()), 160, seed=0,
                                   hyperparameters=hyp, shuffle_buffer=0)

    def boxes_per_image():
        return [len(t["labels"]) for _, t in ds]

    assert max(boxes_per_image()) > 3  # mosaics gather several images
    mosaic.assign(0.0)
    assert boxes_per_image() == [3] * 8


def test_close_mosaic_callback_switches_the_variable_at_its_epoch():
    mosaic = tf.Variable(0.8, trainable=False)
    callback = augment.CloseMosaic(mosaic, epoch=3)
    seen = []
    for epoch in range(5):
        callback.on_epoch_begin(epoch)
        seen.append(round(float(mosaic.numpy()), 6))
    assert seen == [0.8, 0.8, 0.8, 0.0, 0.0]
    callback.on_epoch_begin(0)  # a new fit from epoch 0 restores it
    assert float(mosaic.numpy()) == pytest.approx(0.8)


def test_pipeline_is_deterministic_under_a_seed():
    """Same seed, same outputs; a new iteration (epoch) draws new ones."""
    hyp = {"mixup": 0.5, "cutmix": 0.5, "degrees": 5.0}

    def build():
        return augment.training_pipeline(dataset_of(eight_scenes()[:5]), 96,
                                         seed=1, hyperparameters=hyp,
                                         pool_size=4)

    def outputs(ds):
        return [(i.numpy(), t["boxes"].numpy()) for i, t in ds]

    first_ds = build()
    first, again = outputs(first_ds), outputs(build())
    for (a, b), (c, d) in zip(first, again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    next_epoch = outputs(first_ds)
    assert len(next_epoch) == len(first) == 5
    assert any(not np.array_equal(a, c) for (a, _), (c, _) in
               zip(first, next_epoch))


def test_pipeline_passes_background_images_without_boxes():
    empty = [(np.full((40, 60, 3), 30, np.uint8), np.zeros((0, 4), np.float32),
              np.zeros((0,), np.int32))] * 3
    ds = augment.training_pipeline(dataset_of(empty), 64, seed=0,
                                   hyperparameters={"mixup": 0.5,
                                                    "cutmix": 0.5})
    outputs = list(ds)
    assert len(outputs) == 3
    for image, target in outputs:
        assert image.shape == (64, 64, 3)
        assert target["boxes"].shape == (0, 4)
        assert target["labels"].shape == (0,)


def test_pipeline_rejects_unknown_hyperparameter():
    with pytest.raises(ValueError, match="'mosiac'"):
        augment.training_pipeline(dataset_of(eight_scenes()), 96,
                                  hyperparameters={"mosiac": 1.0})


# ---------------------------------------------------------------- mixing

def test_mixup_keeps_boxes_of_both_images():
    left, boxes_a, labels_a = scene(96, 48, 0, count=2, seed=6)
    right, boxes_b, labels_b = scene(96, 48, 2, count=2, seed=7)
    a = np.zeros((96, 96, 3), np.uint8)
    b = np.zeros((96, 96, 3), np.uint8)
    a[:, :48], b[:, 48:] = left, right
    boxes_b = boxes_b + [48, 0, 48, 0]
    image, boxes, labels = augment.mixup(a, boxes_a, labels_a, b, boxes_b,
                                         labels_b, 0.4)
    np.testing.assert_array_equal(
        image.numpy(), np.floor(a * 0.4 + b * 0.6).astype(np.uint8))
    np.testing.assert_array_equal(labels.numpy(), [0, 1, 2, 3])
    assert_boxes_on_objects(image, boxes, labels, tolerance=0.0)


def test_pipeline_mixup_blends_two_outputs_and_keeps_both_boxes():
    """With the same seed, the outputs without MixUp are the parts: each
    MixUp output is floor(r A + (1 - r) B) of two of them, with both boxes."""
    hyp = dict(NO_COLOUR, fliplr=0.0)
    scenes = eight_scenes()[:4]

    def run(mixup):
        ds = augment.training_pipeline(
            dataset_of(scenes), 96, seed=8, shuffle_buffer=0,
            hyperparameters=dict(hyp, mixup=mixup))
        return [(i.numpy().astype(np.float64), t["boxes"].numpy(),
                 t["labels"].numpy()) for i, t in ds]

    parts, mixed = run(0.0), run(1.0)
    for k, (image, boxes, labels) in enumerate(mixed):
        a, boxes_a, labels_a = parts[k]
        found = False
        for j, (b, boxes_b, labels_b) in enumerate(parts):
            if j == k:
                continue
            # Least-squares r, then the exact uint8 truncation.
            d = (a - b).ravel()
            r = float(d @ (image + 0.5 - b).ravel() / max(d @ d, 1e-9))
            if not 0.3 < r < 0.7:
                continue
            blend = np.floor(r * a + (1 - r) * b)
            if np.abs(blend - image).max() <= 1:
                np.testing.assert_array_equal(
                    labels, np.concatenate([labels_a, labels_b]))
                np.testing.assert_allclose(
                    boxes, np.concatenate([boxes_a, boxes_b]), atol=1e-4)
                found = True
                break
        assert found, f"output {k} is no MixUp of two outputs"


def test_visible_boxes_hand_cases():
    boxes = tf.constant([[10., 10., 30., 30.]] * 4)
    rects = [[0., 0., 40., 15.],    # covers the top strip: y1 -> 15
             [25., 0., 40., 40.],   # covers the right strip: x2 -> 25
             [15., 15., 20., 20.],  # a hole: envelope unchanged
             [0., 0., 20., 20.]]    # a corner: envelope unchanged
    expected = [[10, 15, 30, 30], [10, 10, 25, 30], [10, 10, 30, 30],
                [10, 10, 30, 30]]
    fractions = [0.75, 0.75, 1 - 25 / 400, 0.75]
    for box, rect, want, fraction in zip(boxes, rects, expected, fractions):
        got, visible = mix.visible_boxes(box[None], tf.constant(rect))
        np.testing.assert_allclose(got.numpy()[0], want)
        np.testing.assert_allclose(visible.numpy()[0], fraction, atol=1e-6)


def test_cutmix_keeps_boxes_on_visible_objects():
    a, boxes_a, labels_a = scene(96, 128, 0, count=3, seed=9)
    b, boxes_b, labels_b = scene(96, 128, 3, count=3, seed=10)
    checked = 0
    for s in range(8):
        draws = tf.random.stateless_uniform([3], (s, 1))
        rect = mix.cutmix_rectangle(draws, 96)
        image, boxes, labels = augment.cutmix(a, boxes_a, labels_a, b,
                                              boxes_b, labels_b, rect)
        assert_boxes_on_objects(image, boxes, labels, tolerance=0.0)
        kept = labels.numpy()[:3] >= 0
        # A dropped box of image 1 was more than 60% covered.
        image = image.numpy()
        for j in np.nonzero(~kept)[0]:
            x1, y1, x2, y2 = boxes_a[j].astype(int)
            seen = colour_mask(image[y1:y2, x1:x2], j).mean()
            assert seen < 0.4 + 1e-6
        checked += int((labels.numpy() >= 0).sum())
    assert checked > 8


def test_pipeline_cutmix_keeps_boxes():
    hyp = dict(NO_COLOUR, cutmix=1.0, mosaic=0.0)  # one image, one copy
    ds = augment.training_pipeline(dataset_of(eight_scenes()), 128, seed=9,
                                   hyperparameters=hyp)
    for image, target in ds:
        labels = target["labels"].numpy()
        once = [l if list(labels).count(l) == 1 else -1 for l in labels]
        assert_boxes_on_objects(image, target["boxes"], once, tolerance=3.0)


# ---------------------------------------------------------------- colour

def test_hsv_keeps_boxes_and_changes_colours_consistently():
    image, boxes, labels = scene(64, 96, 0, seed=11)
    out = augment.adjust_hsv(image, [1.0, 0.5, 0.8]).numpy()
    for box, label in zip(boxes.astype(int), labels):
        region = out[box[1]:box[3], box[0]:box[2]].reshape(-1, 3)
        # One object, one new colour: hue kept, half the saturation, 80% value.
        assert (region == region[0]).all()
        h, s, v = colorsys.rgb_to_hsv(*(region[0] / 255.0))
        h0, s0, v0 = colorsys.rgb_to_hsv(*(PALETTE[label] / 255.0))
        assert abs(h - h0) < 0.01 and abs(s - 0.5 * s0) < 0.01 \
            and abs(v - 0.8 * v0) < 0.01
    outside = np.ones(image.shape[:2], bool)
    for box in boxes.astype(int):
        outside[box[1]:box[3], box[0]:box[2]] = False
    assert (out[outside] == 0).all()


def _numpy_adjust_hsv(rgb, gains):
    """Independent float64 numpy of the HSV jitter (colorsys' formulas)."""
    x = rgb.astype(np.float64) / 255.0
    v = x.max(-1)
    span = v - x.min(-1)
    s = np.where(v > 0, span / np.where(v > 0, v, 1), 0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    safe = np.where(span > 0, span, 1)
    h = np.where(r == v, (g - b) / safe, np.where(
        g == v, 2 + (b - r) / safe, 4 + (r - g) / safe)) / 6
    h = np.where(span > 0, h % 1.0, 0)
    h = (h * gains[0]) % 1.0
    s = np.clip(s * gains[1], 0, 1)
    v = np.clip(v * gains[2], 0, 1)
    i = np.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(int) % 6
    sectors = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
               (v, p, q))
    out = np.select([(i == k)[..., None] for k in range(6)],
                    [np.stack(c, -1) for c in sectors])
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("gains", [(1.0, 1.0, 1.0), (1.015, 0.3, 1.4),
                                   (0.985, 1.7, 0.6)])
def test_fused_hsv_equals_the_unfused_ops_on_every_colour(gains):
    # All 2^24 RGB colours, as 16 images of 1024 x 1024 (bounded memory).
    # Float rounding at .5 boundaries only: measured 0 / 3e-4 / 9e-4 of the
    # values one level apart for these gains, never more. Both float32
    # versions are as far from float64 numpy (~1e-3 of the values, by one
    # level): the fused one is no worse.
    differ = fused_off = unfused_off = sampled = 0
    for part in range(16):
        code = np.arange(part << 20, (part + 1) << 20, dtype=np.uint32)
        image = np.stack([code >> 16, (code >> 8) & 255, code & 255],
                         -1).astype(np.uint8).reshape(1024, 1024, 3)
        fused = augment.adjust_hsv(image, gains).numpy().astype(np.int16)
        unfused = color.adjust_hsv_unfused(
            image, np.reshape(gains, (1, 1, 3))).numpy().astype(np.int16)
        assert np.abs(fused - unfused).max() <= 1
        differ += int((fused != unfused).sum())
        want = _numpy_adjust_hsv(image.reshape(-1, 3)[::31], gains)
        got = fused.reshape(-1, 3)[::31]
        assert np.abs(got - want.astype(np.int16)).max() <= 1
        fused_off += int((got != want).sum())
        unfused_off += int((unfused.reshape(-1, 3)[::31] != want).sum())
        sampled += want.size
    assert differ / (3 << 24) < 2e-3, differ
    assert fused_off <= 1.2 * unfused_off + 1e-5 * sampled


def test_fused_hsv_in_a_pipeline_map_and_batched_gains():
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    gains = rng.uniform(0.5, 1.5, (3, 1, 1, 3)).astype(np.float32)
    want = color.adjust_hsv_unfused(images, gains).numpy().astype(int)
    ds = tf.data.Dataset.from_tensors((images, gains)).map(
        augment.adjust_hsv)
    got = next(iter(ds)).numpy().astype(int)
    assert np.abs(got - want).max() <= 1


# ---------------------------------------------------------------- multi-scale

def test_multi_scale_resizes_batches_in_buckets():
    scenes = eight_scenes()
    ds = augment.training_pipeline(dataset_of(scenes), 128, seed=0,
                                   hyperparameters=dict(NO_COLOUR))
    ds = ds.padded_batch(2, padding_values=(
        tf.constant(0, tf.uint8), {"boxes": 0.0, "labels": -1}))
    sizes = (96, 128, 160)
    ds = augment.multi_scale(ds, sizes, every=2, seed=1,
                             bounding_box_format="xyxy")
    traces = []

    @tf.function
    def step(images):
        traces.append(images.shape)
        return tf.reduce_mean(tf.cast(images, tf.float32))

    seen = []
    for images, target in ds:
        side = images.shape[1]
        assert images.shape[1:] == (side, side, 3) and side in sizes
        seen.append(side)
        step(images)
        for image, boxes, labels in zip(images, target["boxes"],
                                        target["labels"]):
            assert_boxes_on_objects(image, boxes, labels, tolerance=3.5)
    assert len(seen) == 4
    assert seen[0] == seen[1] and seen[2] == seen[3]
    assert len(traces) == len(set(seen))  # one trace per bucket


def test_multi_scale_keeps_relative_boxes_and_scales_pixel_ones():
    images = tf.zeros([2, 64, 32, 3], tf.uint8)
    boxes = tf.constant([[[8.0, 16.0, 24.0, 48.0]]] * 2)
    target = {"boxes": boxes, "labels": tf.zeros([2, 1], tf.int32)}
    ds = tf.data.Dataset.from_tensors((images, target))
    out, t = next(iter(augment.multi_scale(ds, (96,), every=1,
                                           bounding_box_format="yxyx")))
    assert out.shape == (2, 96, 96, 3)
    # yxyx: y scales by 96 / 64, x by 96 / 32.
    np.testing.assert_allclose(t["boxes"].numpy()[0, 0], [12, 48, 36, 144])
    out, t = next(iter(augment.multi_scale(
        ds, (96,), every=1, bounding_box_format="rel_xyxy")))
    np.testing.assert_allclose(t["boxes"].numpy(), boxes.numpy())
    with pytest.raises(ValueError, match="bounding_box_format"):
        augment.multi_scale(ds, (96,), bounding_box_format="xyxy_bad")


def test_multi_scale_sizes_are_stride_multiples():
    assert augment.multi_scale_sizes(640) == (320, 480, 640, 800, 960)
    assert all(s % 32 == 0 for s in augment.multi_scale_sizes(416, count=4))


# ---------------------------------------------------------------- adversarial

def test_adversarial_images_increase_the_loss():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1, 0, 1])
    before = float(loss(labels, model(images)))
    perturbed = augment.adversarial_images(model, loss, images, labels,
                                           epsilon=4 / 255)
    after = float(loss(labels, model(perturbed)))
    assert after > before
    step = np.abs(perturbed.numpy() - images)
    assert step.max() <= 4 / 255 + 1e-6
    assert perturbed.numpy().min() >= 0 and perturbed.numpy().max() <= 1
