"""`load(source, ...)`: a streaming `tf.data` pipeline of a detection dataset.

Stages (each image is read and decoded inside `tf.data`, never all held in
memory):

    records (sources.read)   paths + boxes, checked once in Python
    -> index dataset         [shard by file] [shuffle the indices, seeded]
    -> read                  each file's bytes by a file reader
                             (`FixedLengthRecordDataset`, one record of the
                             file's size), so tf.data can shard by file
    -> decode                tf.io.decode_image (JPEG/PNG/BMP/GIF, any size,
                             grayscale -> RGB), parallel
    -> augment=False: letterbox to (S, S), uint8  [cache] [shuffle]
       augment=True:  keras_yolo.data.augment.training_pipeline on the
                      indices, reading each image and its three mosaic
                      partners (uniform over the split) by index, resized
                      to a long side of S; with `cache`: on the decoded,
                      resized images (cached, shuffled), mosaic partners
                      from a pool of consecutive images
    -> boxes to `bounding_box_format`, padded to `max_boxes` with label -1
    -> prefetch

Order is deterministic under a seed (a seeded shuffle of the indices,
`deterministic=True` maps).

Sharding over the workers of a `MultiWorkerMirroredStrategy`:
- `shard=(num_workers, worker_index)` (what a training loop that knows its
  worker should pass): each worker reads only its own files, padded as
  torch's `DistributedSampler` pads (every worker gets `ceil(N / workers)`
  files, the first few files repeated), so every worker runs the same number
  of steps; auto-shard `OFF`. With `augment=True` the mosaic partners are
  drawn from every file (as ultralytics' DDP ranks draw them), so a worker
  also reads other workers' files for them.
- `shard="file"` (not with `augment=True`): auto-shard `FILE`, for a dataset given to
  `strategy.experimental_distribute_dataset` (or `model.fit`) as it is,
  batched or mapped: tf.data finds the file reader and shards the file
  indices before it, so each worker reads and decodes only its own images
  (workers may differ by one file). It raises ("unshardable source") once
  the dataset is wrapped so that the reader is out of reach, e.g. inside a
  `flat_map` over epochs as `training`'s exact-resume batches do (and
  tf.data's `AUTO` does not find the reader behind the index source: it
  falls back to `DATA`).
- otherwise `DATA`: every worker decodes every image and keeps its share of
  the batches (always works, costs decoding).
The files must keep their size while the dataset is in use (each is read
as one record of the size found when `load` ran). The synthetic shapes are
generated in memory: `DATA`.
"""

import os

import logging

import numpy as np
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.data import sources as sources_lib
from keras_yolo.data.letterbox import letterbox, letterbox_boxes, resize
from keras_yolo.data.shapes import CLASS_NAMES, generate

_logger = logging.getLogger("keras_yolo")

# Worst case rows per augmented image, in units of the most boxes of one
# image: a mosaic (4 images), plus a MixUp partner mosaic (4) and a CutMix
# partner mosaic (4). The v5 loss costs follow real rows, not padding.
AUGMENT_BOX_FACTOR = 12
# Images held to shuffle a cached dataset (uncached: the indices shuffle).
CACHED_SHUFFLE_BUFFER = 1024


def load(source, split="train", image_size=640, augment=False,
         bounding_box_format="rel_center_xywh", max_boxes=None,
         images_dir=None, on_error="raise", seed=0, cache=None,
         shuffle=False, format=None, class_names=None, shard=None,
         include_difficult=False, num_images=512, num_classes=3,
         augment_options=None, return_ignored=False):
    """An unbatched dataset of letterboxed (or augmented) images and boxes.

    Args:
        source: an ultralytics dataset YAML, a YOLO txt folder, a COCO JSON
            (with `images_dir`), a Pascal VOC folder, or `"shapes"` (see
            `keras_yolo.data.sources`).
        split: `"train"`, `"val"`, `"test"`, ... (a COCO JSON is one split;
            shapes: `"train"` uses `seed`, other splits `seed + 1000`).
        image_size: S, the side of the square images yielded.
        augment: False: letterbox only. True: the training augmentations of
            `keras_yolo.data.augment.training_pipeline` (mosaic, affine, HSV,
            flips, mixup ...), with `augment_options` as its keywords.
        bounding_box_format: format of the boxes yielded (of the S x S image).
        max_boxes: M, rows per image; default the most boxes of any image
            (times `AUGMENT_BOX_FACTOR` with `augment`). An image with more
            raises (or, with `on_error="skip"`, keeps the first M).
        images_dir: the image folder of a COCO JSON.
        on_error: `"raise"` (default) stops at the first bad image or label
            row, naming it; `"skip"` leaves bad images out and logs a
            counted summary (see `keras_yolo.data.sources`).
        seed: seeds the shuffle and the augmentations.
        cache: None, `"ram"`, or `"disk:PATH"`: keep decoded, resized images
            after the first epoch (pays when decoding is the bottleneck and
            the images fit). A cached dataset shuffles through a buffer of
            `CACHED_SHUFFLE_BUFFER` decoded images.
        shuffle: shuffle the order each epoch (seeded by `seed`).
        format: force a source format (`"yaml"`, `"yolo"`, `"coco"`,
            `"voc"`) for a folder holding several.
        class_names: names to use instead of the source's.
        shard: `(num_shards, index)`: keep only this worker's files (padded
            to `ceil(N / num_shards)` each); `"file"`: let tf.data's
            auto-shard `FILE` do it (see the module docstring).
        include_difficult: keep VOC `difficult` objects as targets.
        num_images, num_classes: size and classes of `"shapes"`.
        augment_options: keywords for `training_pipeline`.
        return_ignored: also yield the regions kept out of the targets
            (COCO crowd, VOC difficult; `Records.ignored`) as
            `"ignored_boxes"` (K, 4) in `bounding_box_format` and
            `"ignored_labels"` (K,) int32 padded with -1, K the most of one
            image (at least 1), for `keras_yolo.metrics.evaluate` to ignore
            detections on them as COCO does. Evaluation data only: not with
            `augment=True`.

    Returns:
        `tf.data.Dataset` of `(image float32 (S, S, 3) in [0, 1],
        {"boxes": (M, 4) float32, "labels": (M,) int32})`, padded rows with
        label -1 and zero boxes (plus the ignored regions with
        `return_ignored`). `dataset.class_names` lists the classes and
        `dataset.records` holds the `sources.Records` (None for shapes).

    Example:
        >>> ds = load("coco128/coco128.yaml", split="val", image_size=320)
        >>> image, y = next(iter(ds))
        >>> ds.class_names[:2]              # ['person', 'bicycle']
    """
    if shard == "file" and augment:
        raise ValueError("shard='file' lets tf.data find the file reader, "
                         "which augment=True reads around (mosaic partners "
                         "by index); pass shard=(num_workers, worker_index)"
                         ".")
    if return_ignored and augment:
        raise ValueError("return_ignored=True is for evaluation data; it "
                         "does not go with augment=True.")
    if cache is not None and cache != "ram" and not str(cache).startswith(
            "disk:"):
        raise ValueError(f"`cache` must be None, 'ram' or 'disk:PATH'; got "
                         f"{cache!r}.")
    if str(source) == "shapes":
        samples, names, records = _shapes_samples(
            split, image_size, num_images, num_classes, seed, return_ignored)
        count, most, most_ignored = num_images, None, 1
        if shuffle and not cache:  # generated in memory: shuffle samples
            samples = samples.shuffle(count, seed=seed,
                                      reshuffle_each_iteration=True)
    else:
        records = sources_lib.read(source, split, format=format,
                                   images_dir=images_dir,
                                   class_names=class_names,
                                   on_error=on_error,
                                   include_difficult=include_difficult)
        if not len(records):
            raise sources_lib.DataError(
                f"{records.source}: split {split!r} holds no usable image.")
        names = records.class_names
        samples, count, read_sample = _file_samples(
            records, shard, shuffle and not cache, seed, augment, image_size,
            return_ignored)
        if augment and not cache:
            augment_options = dict(augment_options or {},
                                   read_sample=read_sample,
                                   num_samples=len(records))
            samples = samples.indices
        most = max(len(b) for b in records.boxes)
        most_ignored = max([len(b) for b in records.ignored] + [1])
    if max_boxes is None:
        most = most if most is not None else 12
        max_boxes = max(most * (AUGMENT_BOX_FACTOR if augment else 1), 1)
    elif most is not None and most > max_boxes and not augment:
        counts = [len(b) for b in records.boxes]
        worst = int(np.argmax(counts))
        message = (f"{records.image_paths[worst]}: {counts[worst]} boxes, "
                   f"more than max_boxes={max_boxes}")
        if on_error == "raise":
            raise sources_lib.DataError(message + "; raise max_boxes.")
        _logger.warning("%s: keeping the first %d boxes of %d images.",
                        message, max_boxes,
                        sum(c > max_boxes for c in counts))
    if cache == "ram":
        samples = samples.cache()
    elif cache:
        samples = samples.cache(str(cache)[len("disk:"):])
    if cache and shuffle:
        # Shuffles decoded images: a bounded buffer (uint8, S x S or less).
        samples = samples.shuffle(min(count, CACHED_SHUFFLE_BUFFER),
                                  seed=seed, reshuffle_each_iteration=True)
    if augment:
        samples = _augment(samples, image_size, seed, augment_options or {})
        if samples.cardinality() == tf.data.UNKNOWN_CARDINALITY:
            # One output per input image (the augment contract), so the
            # trainer still knows its steps per epoch.
            samples = samples.apply(tf.data.experimental.assert_cardinality(
                count))
    finish = _finisher(image_size, bounding_box_format, max_boxes,
                       truncate=on_error == "skip",
                       max_ignored=most_ignored if return_ignored else None)
    dataset = samples.map(finish, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = (
        policy.FILE if shard == "file" and records is not None
        else policy.OFF if shard and shard != "file" else policy.DATA)
    dataset = dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
    dataset.class_names = list(names)
    dataset.records = records
    return dataset


def _ragged_rows(boxes, labels):
    """Per-image `(n_i, 4)` boxes and `(n_i,)` labels as one flat constant
    each plus row splits; `rows(i)` slices image i's."""
    counts = np.array([len(b) for b in boxes], np.int64)
    splits = tf.constant(np.concatenate([[0], np.cumsum(counts)]))
    flat_boxes = tf.constant(np.concatenate(
        list(boxes) + [np.zeros((0, 4), np.float32)]).astype(np.float32))
    flat_labels = tf.constant(np.concatenate(
        list(labels) + [np.zeros((0,), np.int32)]).astype(np.int32))

    def rows(i):
        return (flat_boxes[splits[i]:splits[i + 1]],
                flat_labels[splits[i]:splits[i + 1]])

    return rows


def _file_samples(records, shard, shuffle, seed, augment, image_size,
                  return_ignored=False):
    """`(samples, count, read_sample)`. Samples: decoded letterboxed
    `(S, S, 3)` uint8 + boxes (augment=False) or `(h, w, 3)` uint8 with long
    side S + boxes (augment=True); boxes unpadded `xyxy` pixels (and the
    ignored regions with `return_ignored`); `samples.indices` is the index
    dataset they come from. `read_sample(i)` reads and decodes sample i of
    the records (any, not only this shard's)."""
    paths = tf.constant(records.image_paths)
    file_sizes = tf.constant([os.path.getsize(p) for p in records.image_paths],
                             tf.int64)
    target_rows = _ragged_rows(records.boxes, records.labels)
    ignored_rows = _ragged_rows(records.ignored, records.ignored_labels)
    indices = tf.data.Dataset.range(len(records))
    count = len(records)
    if shard and shard != "file":
        num_shards, index = shard
        if not 0 <= index < num_shards:
            raise ValueError(f"`shard` must be (num_shards, index) with "
                             f"0 <= index < num_shards; got {shard}.")
        count = -(-len(records) // num_shards)
        indices = tf.data.Dataset.range(count * num_shards).map(
            lambda i: i % len(records)).shard(num_shards, index)
    if shuffle:
        indices = indices.shuffle(count, seed=seed,
                                  reshuffle_each_iteration=True)

    def read(i):
        # A reader op (not tf.io.read_file): what auto-shard FILE looks for.
        return tf.data.FixedLengthRecordDataset(
            paths[i], record_bytes=file_sizes[i]).map(lambda data: (i, data))

    def decode(i, data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False,
                                   dtype=tf.uint8)
        boxes, labels = target_rows(i)
        if not augment:
            image, params = letterbox(image, image_size)
            # uint8 until the last map: a quarter of the memory in caches,
            # shuffle and prefetch buffers (as ultralytics keeps images).
            image = tf.cast(tf.round(image * 255.0), tf.uint8)
            target = {"boxes": letterbox_boxes(boxes, params),
                      "labels": labels}
            if return_ignored:
                regions, region_labels = ignored_rows(i)
                target["ignored_boxes"] = letterbox_boxes(regions, params)
                target["ignored_labels"] = region_labels
            return image, target
        image, boxes = _fit_long_side(image, boxes, image_size)
        return image, {"boxes": boxes, "labels": labels}

    samples = indices.flat_map(read).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # One record a file: the count flat_map hides (the trainer's steps per
    # epoch). The auto-shard rewrite drops this assertion.
    samples = samples.apply(tf.data.experimental.assert_cardinality(count))
    samples.indices = indices

    def read_sample(i):
        return decode(i, tf.io.read_file(paths[i]))

    return samples, count, read_sample


def _fit_long_side(image, boxes, size):
    """uint8 image resized so its long side is `size` (ultralytics'
    `load_image`), boxes scaled alike."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    ratio = size / tf.reduce_max(shape)
    new = tf.maximum(tf.cast(tf.round(shape * ratio), tf.int32), 1)

    def resized():
        out = resize(tf.cast(image, tf.float32), new[0], new[1])
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    # Already sized (e.g. coco128's 640 px images): no float round trip.
    same = tf.reduce_all(tf.equal(new, tf.shape(image)[:2]))
    resized = tf.cond(same, lambda: image, resized)
    scale = tf.cast(new[::-1], tf.float32) / shape[::-1]
    return resized, boxes * tf.tile(scale, [2])


def _shapes_samples(split, image_size, num_images, num_classes, seed,
                    return_ignored=False):
    """The synthetic shapes as unpadded samples (square: no letterbox);
    with `return_ignored`, no ignored region."""
    images, gt = generate(num_images, image_size, num_classes, max_boxes=20,
                          seed=seed if split == "train" else seed + 1000)
    dataset = tf.data.Dataset.from_tensor_slices(
        (images, gt["boxes"], gt["labels"]))

    def unpad(image, boxes, labels):
        keep = labels >= 0
        target = {"boxes": tf.boolean_mask(boxes, keep),
                  "labels": tf.boolean_mask(labels, keep)}
        if return_ignored:
            target["ignored_boxes"] = tf.zeros([0, 4])
            target["ignored_labels"] = tf.zeros([0], tf.int32)
        return image, target

    return dataset.map(unpad), list(CLASS_NAMES[:num_classes]), None


def _augment(samples, image_size, seed, options):
    """Samples (or indices, with `options["read_sample"]`) ->
    `keras_yolo.data.augment.training_pipeline`."""
    try:
        from keras_yolo.data import augment as augment_lib
    except ImportError as error:
        raise ImportError("augment=True needs keras_yolo.data.augment "
                          f"({error}).") from None

    def to_uint8(image, y):
        if image.dtype != tf.uint8:
            image = tf.cast(tf.clip_by_value(tf.round(image * 255.0), 0, 255),
                            tf.uint8)
        return image, y

    if "read_sample" not in options:
        samples = samples.map(to_uint8)
    return augment_lib.training_pipeline(samples, image_size, seed=seed,
                                         **options)


def _finisher(image_size, bounding_box_format, max_boxes, truncate,
              max_ignored=None):
    """Image to float [0, 1]; `xyxy` pixel boxes to the format, padded
    (the ignored regions too, to `max_ignored` rows, when given)."""
    shape = (image_size, image_size)

    def convert_and_pad(boxes, labels, rows):
        boxes = box_ops.convert(boxes, "xyxy", bounding_box_format,
                                image_shape=shape)
        missing = rows - tf.shape(labels)[0]
        boxes = tf.pad(boxes, [[0, missing], [0, 0]])
        labels = tf.pad(labels, [[0, missing]], constant_values=-1)
        return (tf.ensure_shape(boxes, (rows, 4)),
                tf.ensure_shape(labels, (rows,)))

    def finish(image, y):
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        image = tf.ensure_shape(tf.cast(image, tf.float32),
                                (image_size, image_size, 3))
        boxes = tf.reshape(tf.cast(y["boxes"], tf.float32), (-1, 4))
        labels = tf.reshape(tf.cast(y["labels"], tf.int32), (-1,))
        count = tf.shape(labels)[0]
        if not truncate:
            tf.debugging.assert_less_equal(
                count, max_boxes, message=f"an image has more boxes than "
                f"max_boxes={max_boxes}; raise max_boxes")
        boxes, labels = convert_and_pad(boxes[:max_boxes],
                                        labels[:max_boxes], max_boxes)
        target = {"boxes": boxes, "labels": labels}
        if max_ignored is not None:
            target["ignored_boxes"], target["ignored_labels"] = \
                convert_and_pad(
                    tf.reshape(tf.cast(y["ignored_boxes"], tf.float32),
                               (-1, 4)),
                    tf.reshape(y["ignored_labels"], (-1,)), max_ignored)
        return image, target

    return finish
