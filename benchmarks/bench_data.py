"""Training-pipeline throughput: keras_yolo's tf.data augmentation against
ultralytics yolov5's `create_dataloader`, on coco128 at 640 with mosaic.

    nice -n 10 .venv/bin/python benchmarks/bench_data.py [--image-size 640]
        [--rounds 3] [--batch-size 16] [--images 128] [--ours load pool]
        [--grid benchmarks/out/augment_grid.png]

Ours, two ways: `ours` is what training uses, `keras_yolo.data.load(
"coco128.yaml", augment=True, shuffle=True)` (each mosaic reads its image
and three partners drawn uniformly from the split, four decodes a mosaic as
ultralytics; float32 images in [0, 1], padded boxes); `ours_pool` is
`training_pipeline` on a decoded dataset (mosaic partners from a pool of 8
consecutive images, one decode an image; uint8 images).

Both read the same JPEGs and YOLO txt labels from disk every epoch (no cache)
and apply hyp.scratch-low.yaml's augmentation (mosaic 1.0, translate 0.1,
scale 0.5, HSV 0.015/0.7/0.4, fliplr 0.5), in batches of 16. The runs
alternate (ours, yolov5 workers 0, yolov5 workers 2) for `--rounds` rounds,
from persistent iterators (ours: one `repeat()`ed dataset; yolov5: its
InfiniteDataLoader). While one loader is timed the others only fill their
buffers in the background, so each turn first pulls `--drain` images untimed
(more than yolov5 buffers: two batches per worker), then times `--images`
images. Ours gets a fresh iterator each turn (its old one is deleted, its
threads stop) so it starts every turn with empty buffers. yolov5 reads a
mirror of coco128 made of symlinks in a temporary folder, so its label cache
is not written into the shared dataset.

Prints images/s medians, the ratios ours / yolov5 (and, with `--train-step`,
ours / a keras_yolo yolov5n train step at the same size on one of our
batches: above 1, the pipeline keeps up with the step), the start-up time of a
fresh iterator of ours (paid once per epoch by `model.fit`), the load average
before and after, and one JSON line. Writes a PNG grid of one augmented batch
with its boxes (`--grid`). Needs the parity extra (bash .ci/install_parity).
"""

import argparse
import gc
import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("YOLOv5_VERBOSE", "False")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_yolo.data.augment import training_pipeline  # noqa: E402

COCO128 = os.path.join(ROOT, "..", "shared", "datasets", "coco128")
HYP = dict(hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=0.0, translate=0.1,
           scale=0.5, shear=0.0, perspective=0.0, flipud=0.0, fliplr=0.5,
           mosaic=1.0, mixup=0.0)
MAX_BOXES = 300  # padded rows per image in the benchmark's batches


def read_yolo_folder(root):
    """Minimal YOLO txt reader: image paths and `(N, 5)` `cls cx cy w h` rows."""
    images = sorted(glob.glob(os.path.join(root, "images", "train2017",
                                           "*.jpg")))
    labels = []
    for path in images:
        txt = path.replace(os.sep + "images" + os.sep,
                           os.sep + "labels" + os.sep)[:-4] + ".txt"
        rows = np.zeros((0, 5), np.float32)
        if os.path.exists(txt):
            rows = np.loadtxt(txt, ndmin=2, dtype=np.float32).reshape(-1, 5)
        labels.append(rows)
    return images, labels


def decoded_dataset(paths, labels, seed=0):
    """Unbatched `(image uint8, {"boxes" xyxy pixels, "labels"})` from files."""
    rows = tf.ragged.constant([r.tolist() for r in labels], ragged_rank=1,
                              inner_shape=(5,), dtype=tf.float32)
    ds = tf.data.Dataset.from_tensor_slices((paths, rows))
    ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def decode(path, row):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        shape = tf.cast(tf.shape(image), tf.float32)
        h, w = shape[0], shape[1]
        cx, cy, bw, bh = row[:, 1] * w, row[:, 2] * h, row[:, 3] * w, \
            row[:, 4] * h
        boxes = tf.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2,
                          cy + bh / 2], axis=-1)
        return image, {"boxes": boxes, "labels": tf.cast(row[:, 0], tf.int32)}

    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def load_loader(image_size, batch_size, seed=0):
    """`keras_yolo.data.load` with augmentation, batched (what training
    reads)."""
    from keras_yolo import data

    ds = data.load(os.path.join(COCO128, "coco128.yaml"), split="train",
                   image_size=image_size, augment=True, shuffle=True,
                   seed=seed, bounding_box_format="xyxy",
                   augment_options={"hyperparameters": HYP})
    return ds.batch(batch_size).prefetch(2)


def our_loader(paths, labels, image_size, batch_size, seed=0):
    ds = training_pipeline(decoded_dataset(paths, labels, seed), image_size,
                           seed=seed, hyperparameters=HYP)

    def pad(image, target):
        n = tf.minimum(tf.shape(target["labels"])[0], MAX_BOXES)
        extra = MAX_BOXES - n
        return image, {
            "boxes": tf.pad(target["boxes"][:n], [[0, extra], [0, 0]]),
            "labels": tf.pad(target["labels"][:n], [[0, extra]],
                             constant_values=-1)}

    ds = ds.map(pad, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(2)


def symlink_mirror(root, target):
    """`target/{images,labels}/train2017/*` as symlinks to `root`'s files."""
    for kind in ("images", "labels"):
        folder = os.path.join(target, kind, "train2017")
        os.makedirs(folder, exist_ok=True)
        for path in glob.glob(os.path.join(root, kind, "train2017", "*")):
            link = os.path.join(folder, os.path.basename(path))
            if not os.path.exists(link):
                os.symlink(os.path.abspath(path), link)
    return os.path.join(target, "images", "train2017")


def yolov5_loader(images_dir, image_size, batch_size, workers):
    import yolov5_reference  # noqa: F401 - torchvision shim before yolov5

    from yolov5.utils.dataloaders import create_dataloader

    hyp = dict(HYP, copy_paste=0.0)
    loader, _ = create_dataloader(
        images_dir, image_size, batch_size,
        32, hyp=hyp, augment=True, workers=workers, shuffle=True, seed=0)
    return loader


def images_per_second(batches, count, drain):
    """Images/s over `count` images of an endless batch iterator, after
    pulling `drain` images untimed."""
    pulled = 0
    while pulled < drain:
        pulled += int(next(batches)[0].shape[0])
    pulled = 0
    start = time.perf_counter()
    while pulled < count:
        batch = next(batches)
        pulled += int(batch[0].shape[0])
    return pulled / (time.perf_counter() - start)


def endless(loader):
    while True:
        yield from loader


def train_step_images_per_second(batch, steps=3):
    """Images/s of one keras_yolo yolov5n train step (SGD, YoloV5Loss) on
    `batch`, the median of `steps` steps after a warm-up step."""
    import keras

    from keras_yolo.anchors import YOLOV5_ANCHORS
    from keras_yolo.losses import YoloV5Loss
    from keras_yolo.models import build

    images, target = batch
    size = int(images.shape[1])
    model = build("yolov5n", num_classes=80, input_shape=(size, size, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.937),
                  loss=YoloV5Loss(80, anchors=YOLOV5_ANCHORS,
                                  bounding_box_format="xyxy"))
    x = tf.cast(images, tf.float32)
    x = x / 255.0 if images.dtype == tf.uint8 else x
    model.train_on_batch(x, target)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, target)
        times.append(time.perf_counter() - start)
    return int(images.shape[0]) / statistics.median(times)


def write_grid(path, batch, names, columns=4, tile=320):
    from PIL import Image, ImageDraw

    images, target = batch
    images = np.asarray(images)
    boxes, classes = np.asarray(target["boxes"]), np.asarray(target["labels"])
    size = images.shape[1]
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * tile, rows * tile), (0, 0, 0))
    scale = tile / size
    for i, image in enumerate(images):
        im = Image.fromarray(image).resize((tile, tile), Image.BILINEAR)
        draw = ImageDraw.Draw(im)
        for box, label in zip(boxes[i], classes[i]):
            if label < 0:
                continue
            colour = tuple(int(c) for c in np.random.default_rng(
                int(label)).integers(64, 256, 3))
            draw.rectangle([float(v) * scale for v in box], outline=colour,
                           width=2)
            draw.text((float(box[0]) * scale + 2, float(box[1]) * scale + 1),
                      names[int(label)], fill=colour)
        grid.paste(im, ((i % columns) * tile, (i // columns) * tile))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)


def class_names():
    import yaml

    with open(os.path.join(COCO128, "coco128.yaml")) as f:
        names = yaml.safe_load(f)["names"]
    return [names[i] for i in sorted(names)] if isinstance(names, dict) \
        else list(names)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=128,
                        help="images timed per round and loader")
    parser.add_argument("--drain", type=int, default=96,
                        help="images pulled untimed before each timed turn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="yolov5 DataLoader workers to compare with")
    parser.add_argument("--ours", nargs="+", default=["load", "pool"],
                        choices=["load", "pool"],
                        help="our pipelines to time: load (ours) and/or "
                        "pool (ours_pool)")
    parser.add_argument("--train-step", action="store_true",
                        help="also time a keras_yolo yolov5n train step")
    parser.add_argument("--grid", default=os.path.join(
        ROOT, "benchmarks", "out", "augment_grid.png"))
    args = parser.parse_args()
    load_before = os.getloadavg()

    paths, labels = read_yolo_folder(COCO128)
    ours_datasets, startups, firsts = {}, {}, []
    for kind in args.ours:
        name = "ours" if kind == "load" else "ours_pool"
        start = time.perf_counter()
        ds = (load_loader(args.image_size, args.batch_size) if kind == "load"
              else our_loader(paths, labels, args.image_size,
                              args.batch_size)).repeat()
        firsts.append(next(iter(ds)))
        startups[name] = time.perf_counter() - start
        ours_datasets[name] = ds
    first = firsts[0]
    if args.grid:
        images, target = first
        if images.dtype != tf.uint8:
            images = tf.cast(tf.round(images * 255.0), tf.uint8)
        write_grid(args.grid, (images, target), class_names())

    loaders = {name: None for name in ours_datasets}
    mirror = tempfile.mkdtemp(prefix="bench_data_coco128_")
    images_dir = symlink_mirror(COCO128, mirror)
    for workers in args.workers:
        loader = yolov5_loader(images_dir, args.image_size, args.batch_size,
                               workers)
        loaders[f"yolov5_workers{workers}"] = endless(loader)

    speeds = {name: [] for name in loaders}
    for _ in range(args.rounds):
        for name, batches in loaders.items():
            if name in ours_datasets:
                loaders[name] = None
                gc.collect()  # the previous iterator's threads stop
                batches = loaders[name] = iter(ours_datasets[name])
            speeds[name].append(
                images_per_second(batches, args.images, args.drain))
    loaders = batches = loader = None
    gc.collect()  # yolov5's workers shut down before their files go
    shutil.rmtree(mirror, ignore_errors=True)
    medians = {name: statistics.median(v) for name, v in speeds.items()}
    if args.train_step:
        medians["yolov5n_train_step"] = train_step_images_per_second(first)
        speeds["yolov5n_train_step"] = [medians["yolov5n_train_step"]]
    report = {"image_size": args.image_size, "batch_size": args.batch_size,
              "images_per_round": args.images, "drain": args.drain,
              "rounds": args.rounds,
              "images_per_second": medians,
              "iterator_startup_s": startups,
              "load_average_before": load_before,
              "load_average_after": os.getloadavg()}
    peers = [name for name in medians if name not in ours_datasets]
    for mine in ours_datasets:
        for name in peers:
            report[f"ratio_{mine}_over_{name}"] = medians[mine] / medians[name]
    print(f"load average before {load_before}, after {os.getloadavg()}")
    for name, value in medians.items():
        print(f"{name:>20}: {value:7.1f} images/s  (rounds: "
              + ", ".join(f"{v:.1f}" for v in speeds[name]) + ")")
    for mine in ours_datasets:
        for name in peers:
            print(f"{mine} / {name}: {medians[mine] / medians[name]:.2f}")
    for mine, startup in startups.items():
        print(f"{mine}: first batch of a fresh pipeline after {startup:.1f} s")
    if args.grid:
        print(f"grid of one augmented batch: {args.grid}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
