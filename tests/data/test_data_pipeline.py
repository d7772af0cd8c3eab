"""`keras_yolo.data.load`, letterbox and its inverse, plot_batch, and the
`train --data` / `show-data` commands on small files."""

import json
import os
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import require_peer
from keras_yolo import data
from keras_yolo.data import DataError

RACCOON = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                       "datasets", "raccoon")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A YOLO folder of 12 non-square images (one grayscale) and a YAML."""
    root = tmp_path_factory.mktemp("small")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(12):
        height, width = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        if i == 5:
            image = image.convert("L")
        image.save(root / "images" / f"im{i:02d}.png")
        count = int(rng.integers(0, 4))
        rows = []
        for _ in range(count):
            w, h = rng.uniform(0.1, 0.5, 2)
            cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2,
                                                                1 - h / 2)
            rows.append((int(rng.integers(0, 3)), cx, cy, w, h))
        (root / "labels" / f"im{i:02d}.txt").write_text("".join(
            f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"
            for c, cx, cy, w, h in rows))
        expected[f"im{i:02d}.png"] = (height, width, rows)
    (root / "data.yaml").write_text(
        "path: .\ntrain: images\nval: images\nnames: [a, b, c]\n")
    return root, expected


def _letterbox_reference(height, width, size, rows):
    """Independent numpy letterbox of YOLO rows -> rel_center_xywh."""
    r = size / max(height, width)
    new_w, new_h = round(width * r), round(height * r)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    out = []
    for _, cx, cy, w, h in rows:
        x1 = (cx - w / 2) * new_w + left
        x2 = (cx + w / 2) * new_w + left
        y1 = (cy - h / 2) * new_h + top
        y2 = (cy + h / 2) * new_h + top
        out.append([(x1 + x2) / 2 / size, (y1 + y2) / 2 / size,
                    (x2 - x1) / size, (y2 - y1) / size])
    return np.array(out).reshape(-1, 4), (new_h, new_w, top, left)


def test_load_letterboxes_each_image_and_pads_with_minus_one(small):
    root, expected = small
    ds = data.load(str(root), image_size=64, max_boxes=5)
    assert ds.class_names == ["a", "b", "c"]
    assert int(ds.cardinality()) == 12
    assert ds.element_spec[0].shape == (64, 64, 3)
    for path, (image, y) in zip(ds.records.image_paths, ds):
        height, width, rows = expected[os.path.basename(path)]
        want, (new_h, new_w, top, left) = _letterbox_reference(
            height, width, 64, rows)
        n = len(rows)
        np.testing.assert_array_equal(y["labels"][:n], [r[0] for r in rows])
        np.testing.assert_array_equal(y["labels"][n:], -1)
        np.testing.assert_allclose(y["boxes"][:n], want, atol=1e-5)
        np.testing.assert_array_equal(y["boxes"][n:], 0.0)
        image = image.numpy()
        assert image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
        gray = np.ones_like(image, bool)
        gray[top:top + new_h, left:left + new_w] = False
        np.testing.assert_allclose(image[gray], 114 / 255, atol=1e-6)


def test_letterbox_matches_ultralytics_geometry_and_pixels():
    augment = require_peer("ultralytics.data.augment", "(ultralytics)")
    cv2 = require_peer("cv2")
    rng = np.random.default_rng(1)
    for height, width, size in ((30, 50, 64), (45, 20, 64), (37, 37, 96)):
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        reference = augment.LetterBox(new_shape=(size, size), auto=False,
                                      scaleup=True)
        params = reference.get_params({"img": image})
        want = reference(image=image.copy())
        ours, our_params = data.letterbox(tf.constant(image), size)
        new_w, new_h = params["new_unpad"]
        np.testing.assert_allclose(our_params.numpy(), [
            new_w / width, new_h / height, params["left"], params["top"],
            width, height], rtol=1e-6)
        assert want.shape == ours.shape == (size, size, 3)
        # Upscaling: TF bilinear and cv2 INTER_LINEAR sample alike.
        assert cv2.INTER_LINEAR == reference.interpolation
        np.testing.assert_allclose(ours.numpy() * 255, want, atol=1.01)
    # Shrinking: ultralytics' load_image (long side to S with INTER_AREA),
    # then its LetterBox pads; ours equals it up to cv2's uint8 rounding.
    for height, width in ((200, 130), (300, 500)):
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        r = 64 / max(height, width)
        shrunk = cv2.resize(image, (round(width * r), round(height * r)),
                            interpolation=cv2.INTER_AREA)
        want = augment.LetterBox(new_shape=(64, 64), auto=False)(image=shrunk)
        ours, _ = data.letterbox(tf.constant(image), 64)
        np.testing.assert_allclose(ours.numpy() * 255, want, atol=0.51)


def test_unletterbox_inverts_letterbox_under_xla_with_run_time_shapes():
    rng = np.random.default_rng(2)
    sizes = np.array([[480, 640], [640, 360], [100, 1000]])
    params = []
    for height, width in sizes:
        _, p = data.letterbox(tf.zeros((height, width, 3), tf.uint8), 320)
        params.append(p.numpy())
    params = np.stack(params)
    x1 = rng.uniform(0, sizes[:, 1:2] * 0.5, (3, 7))
    y1 = rng.uniform(0, sizes[:, 0:1] * 0.5, (3, 7))
    boxes = np.stack([x1, y1, x1 + sizes[:, 1:2] * 0.4,
                      y1 + sizes[:, 0:1] * 0.4], -1).astype(np.float32)

    @tf.function(jit_compile=True, input_signature=[
        tf.TensorSpec((None, None, 4)), tf.TensorSpec((None, 6))])
    def round_trip(b, p):
        return data.unletterbox_boxes(data.letterbox_boxes(b, p), p)

    np.testing.assert_allclose(round_trip(boxes, params), boxes, atol=1e-3)
    # Hand-computed: 640x480 -> 320: scale 0.5, 40 px of padding on top.
    np.testing.assert_allclose(params[0], [0.5, 0.5, 0, 40, 640, 480])
    np.testing.assert_allclose(data.letterbox_boxes(
        [[100., 50., 300., 250.]], params[0]), [[50, 65, 150, 165]])
    # Detections reaching into the padding are clipped to the original.
    np.testing.assert_allclose(data.unletterbox_boxes(
        [[-5., 10., 330., 300.]], params[0]), [[0, 0, 640, 480]])


def test_raccoon_image_through_load_equals_hand_computed_boxes():
    if not os.path.exists(RACCOON):
        pytest.skip("raccoon dataset missing")
    ds = data.load(RACCOON, split="train", image_size=320,
                   bounding_box_format="xyxy")
    index = [os.path.basename(p) for p in ds.records.image_paths].index(
        "raccoon-1.jpg")
    _, y = next(iter(ds.skip(index)))
    # 650x417 -> 320x205, 57 px on top; the XML box is <81, 88, 522, 408>.
    sx, sy = 320 / 650, 205 / 417
    np.testing.assert_allclose(y["boxes"][0], [81 * sx, 88 * sy + 57,
                                               522 * sx, 408 * sy + 57],
                               rtol=1e-5)
    assert y["labels"].numpy().tolist() == [0, -1, -1]  # M = 3, the most


def _order(ds, epochs=1):
    return [tuple(y["labels"].numpy().tolist()) + (float(image.numpy().sum()),)
            for image, y in ds.repeat(epochs)]


def test_shuffle_is_deterministic_under_a_seed_and_reshuffles(small):
    root, _ = small
    a = _order(data.load(str(root), image_size=32, shuffle=True, seed=3), 2)
    b = _order(data.load(str(root), image_size=32, shuffle=True, seed=3), 2)
    c = _order(data.load(str(root), image_size=32, shuffle=True, seed=4))
    plain = _order(data.load(str(root), image_size=32))
    assert a == b
    assert a[:12] != c and a[:12] != a[12:]
    assert sorted(a[:12]) == sorted(plain)


def test_shards_split_the_files_and_cache_changes_nothing(small, tmp_path):
    root, _ = small
    plain = _order(data.load(str(root), image_size=32))
    first = data.load(str(root), image_size=32, shard=(2, 0))
    second = data.load(str(root), image_size=32, shard=(2, 1))
    assert first.options().experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.OFF
    assert data.load(str(root)).options().experimental_distribute \
        .auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    assert _order(first) == plain[0::2] and _order(second) == plain[1::2]
    # 12 files over 5 workers: 3 each; files 12..14 wrap to 0..2.
    fifths = [_order(data.load(str(root), image_size=32, shard=(5, i)))
              for i in range(5)]
    assert [len(f) for f in fifths] == [3] * 5
    assert sorted(sum(fifths, [])) == sorted(plain + plain[:3])
    assert fifths[2] == [plain[2], plain[7], plain[0]]
    with pytest.raises(ValueError, match="shard=\\(num_workers"):
        data.load(str(root), augment=True, shard="file")
    assert _order(data.load(str(root), image_size=32, cache="ram"), 2) == \
        plain * 2
    disk = data.load(str(root), image_size=32,
                     cache=f"disk:{tmp_path / 'cache'}")
    assert _order(disk, 2) == plain * 2


def _images(ds):
    return [image.tobytes() for image, _ in ds.as_numpy_iterator()]


@pytest.mark.parametrize("shuffle", [False, True])
def test_multi_worker_auto_shard_gives_each_worker_its_own_files(small,
                                                                 shuffle):
    # The rewrite MultiWorkerMirroredStrategy.experimental_distribute_dataset
    # applies to each worker's copy of the dataset (input_ops), after a
    # batching that keeps the dataset's own policy.
    from tensorflow.python.distribute import input_ops

    from training import resume

    root, _ = small
    everything = _images(data.load(str(root), image_size=32))
    assert len(set(everything)) == 12
    seen = []
    for worker in range(2):
        ds = data.load(str(root), image_size=32, shuffle=shuffle, seed=1,
                       shard="file")
        assert ds.cardinality() == 12
        ds = ds.batch(4).with_options(resume.distribution_options(ds))
        ds = input_ops.auto_shard_dataset(ds, 2, worker, 2)
        mine = [image.tobytes() for batch, _ in ds.as_numpy_iterator()
                for image in batch]
        # Each worker read whole files (half of them), in both epochs.
        assert len(mine) == 6
        again = [image.tobytes() for batch, _ in ds.as_numpy_iterator()
                 for image in batch]
        assert sorted(again) == sorted(mine)
        seen.append(set(mine))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(everything)
    # Files, not elements: worker 0 holds the even files of the list.
    assert seen[0] == set(everything[0::2])


def test_max_boxes_is_checked_and_shapes_load_like_shapes(small):
    root, expected = small
    most = max(len(rows) for _, _, rows in expected.values())
    with pytest.raises(DataError, match=rf"{most} boxes, more than "
                       r"max_boxes=1; raise max_boxes"):
        data.load(str(root), max_boxes=1)
    assert data.load(str(root)).element_spec[1]["labels"].shape == (most,)
    ours = data.load("shapes", image_size=64, num_images=3, max_boxes=20,
                     bounding_box_format="xyxy")
    theirs = data.shapes(num_images=3, image_size=64, max_boxes=20,
                         bounding_box_format="xyxy")
    for (a, ya), (b, yb) in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_array_equal(ya["labels"], yb["labels"])
        np.testing.assert_allclose(ya["boxes"], yb["boxes"], atol=1e-4)


def test_augment_calls_the_training_pipeline_with_unpadded_samples(
        small, monkeypatch):
    root, expected = small
    seen = {}

    def training_pipeline(dataset, image_size, seed=None, read_sample=None,
                          num_samples=None, **hyp):
        seen.update(image_size=image_size, seed=seed, hyp=hyp,
                    index_spec=dataset.element_spec, num_samples=num_samples)
        # The mosaic reads its images (and partners) by index.
        dataset = dataset.map(read_sample)
        seen["spec"] = dataset.element_spec

        def square(image, y):  # stretch to S x S: boxes scale per axis
            shape = tf.cast(tf.shape(image)[:2], tf.float32)
            scale = tf.tile(image_size / shape[::-1], [2])
            image = tf.image.resize(image, (image_size, image_size))
            return tf.cast(image, tf.uint8), {"boxes": y["boxes"] * scale,
                                              "labels": y["labels"]}

        return dataset.map(square)

    fake = types.ModuleType("keras_yolo.data.augment")
    fake.training_pipeline = training_pipeline
    monkeypatch.setitem(sys.modules, "keras_yolo.data.augment", fake)
    monkeypatch.setattr(data, "augment", fake, raising=False)
    ds = data.load(str(root), image_size=48, augment=True, seed=7,
                   augment_options={"mosaic": 0.5})
    assert seen["image_size"] == 48 and seen["seed"] == 7
    assert seen["hyp"] == {"mosaic": 0.5}
    assert seen["index_spec"].dtype == tf.int64 and seen["num_samples"] == 12
    image_spec, y_spec = seen["spec"]
    assert image_spec.dtype == tf.uint8 and image_spec.shape.rank == 3
    assert y_spec["boxes"].shape.as_list() == [None, 4]
    most = max(len(rows) for _, _, rows in expected.values())
    assert ds.element_spec[1]["labels"].shape == (data.pipeline.AUGMENT_BOX_FACTOR * most,)
    for path, (image, y) in zip(ds.records.image_paths, ds):
        rows = expected[os.path.basename(path)][2]
        n = len(rows)
        want = np.array([r[1:] for r in rows]).reshape(-1, 4)
        # Stretched to a square, rel_center_xywh is unchanged.
        np.testing.assert_allclose(y["boxes"][:n], want, atol=1e-3)
        assert (y["labels"].numpy()[n:] == -1).all()


def test_plot_batch_draws_the_boxes(small, tmp_path):
    root, _ = small
    ds = data.load(str(root), image_size=64)
    images, y = next(iter(ds.batch(4)))
    path = data.plot_batch(images, y, ds.class_names, "rel_center_xywh",
                           str(tmp_path / "grid.png"))
    drawn = np.asarray(Image.open(path).convert("RGB")).astype(int)
    box_colour = np.abs(drawn - [0, 188, 212]).sum(-1) < 40
    empty = {"boxes": y["boxes"], "labels": -tf.ones_like(y["labels"])}
    data.plot_batch(images, empty, ds.class_names, "rel_center_xywh",
                    str(tmp_path / "none.png"))
    bare = np.asarray(Image.open(tmp_path / "none.png").convert("RGB"))
    assert box_colour.sum() > 100
    assert (np.abs(bare.astype(int) - [0, 188, 212]).sum(-1) < 40).sum() \
        < box_colour.sum() / 10


def test_show_data_command_and_train_datasets_from_a_dataset_yaml(
        small, tmp_path, capsys):
    import argparse

    from training import cli
    from training.__main__ import main

    root, expected = small
    out = tmp_path / "grid.png"
    assert main(["show-data", "--data", str(root / "data.yaml"), "--split",
                 "val", "--image-size", "64", "--num-images", "4", "--out",
                 str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["images"] == 4 and shown["num_classes"] == 3
    assert shown["boxes"] == sum(len(expected[f"im{i:02d}.png"][2])
                                 for i in range(4))
    assert Image.open(out).size[0] > 100
    parser = argparse.ArgumentParser()
    cli.add_train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--data", str(root / "data.yaml"),
                              "--image-size", "32"])
    train, num_classes = cli._dataset(args, "train")
    val, _ = cli._dataset(args, "val")
    assert num_classes == 3 and train.class_names == ["a", "b", "c"]
    assert int(train.cardinality()) == int(val.cardinality()) == 12
    assert train.element_spec[0].shape == (32, 32, 3)


def test_train_augment_flags_reach_the_augment_pipeline(small, tmp_path):
    import argparse

    import keras_yolo.data.augment  # noqa: F401 - the real one, not a fake
    from training import cli

    root, _ = small
    (tmp_path / "hyp.yaml").write_text("lr0: 0.01\nhsv_v: 0.25\n")
    parser = argparse.ArgumentParser()
    cli.add_train_parser(parser.add_subparsers())
    args = parser.parse_args([
        "train", "--data", str(root / "data.yaml"), "--image-size", "32",
        "--augment", "--epochs", "5", "--close-mosaic", "2", "--hyp",
        str(tmp_path / "hyp.yaml"), "mixup=0.2"])
    options, callbacks = cli._augment_setup(args)
    hyp = options["hyperparameters"]
    assert hyp["mixup"] == 0.2 and hyp["hsv_v"] == 0.25 and "lr0" not in hyp
    assert float(hyp["mosaic"].numpy()) == 1.0
    assert callbacks[0].epoch == 3 and callbacks[0].variable is hyp["mosaic"]
    ds, num_classes = cli._dataset(args, "train", options)
    image, y = next(iter(ds))
    assert image.shape == (32, 32, 3) and num_classes == 3
    real = y["labels"].numpy() >= 0
    assert np.all(y["boxes"].numpy()[real] >= 0) and np.all(
        y["boxes"].numpy()[real] <= 1)
    with pytest.raises(SystemExit, match="unknown key 'mosiac'"):
        cli._hyperparameters(["mosiac=0.5"])


@pytest.mark.slow
def test_train_command_trains_from_a_dataset_yaml(small, tmp_path):
    from training.__main__ import main

    root, _ = small
    run = tmp_path / "run"
    assert main(["train", "--data", str(root / "data.yaml"), "--image-size",
                 "32", "--epochs", "1", "--batch-size", "4", "--jit-compile",
                 "false", "--no-ema", "--out", str(run)]) == 0
    with open(run / "class_names.json") as f:
        assert json.load(f) == ["a", "b", "c"]
    with open(run / "config.json") as f:
        config = json.load(f)
    assert config["class_names"] == ["a", "b", "c"]
    assert config["args"]["data"].endswith("data.yaml")
    # evaluate --run reads the run's own validation split of the YAML.
    assert main(["evaluate", "--run", str(run)]) == 0
    with open(run / "evaluate.json") as f:
        assert json.load(f)["num_images"] == 12
