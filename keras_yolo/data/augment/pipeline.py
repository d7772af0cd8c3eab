"""The training augmentation pipeline: ultralytics yolov5's `__getitem__` on tf.data.

Per output image, as `LoadImagesAndLabels.__getitem__` with `augment=True`:

1. every image is resized so its longer side is S (`load_image`);
2. with probability `mosaic`: a 4-image mosaic on a 2S canvas (the image and
   three others), else the image letterboxed to S x S;
3. `random_perspective` (`degrees`, `translate`, `scale`, `shear`,
   `perspective`) back to S x S, boxes clipped and filtered by
   `box_candidates`;
4. with probability `mixup` (mosaic outputs only): MixUp with another output;
   with probability `cutmix`: CutMix with another output (YOLOv4's freebie);
5. HSV jitter (`hsv_h`, `hsv_s`, `hsv_v`), up-down flip (`flipud`),
   left-right flip (`fliplr`) (HSV is applied last, on the whole pool: per
   pixel, it commutes with the flips).

Where the "three others" come from:

- Given `read_sample` (random access to the files by index, as
  `keras_yolo.data.load` passes it): as ultralytics' `random.choices`, three
  indices drawn uniformly (with replacement) from the whole list,
  `mosaic_partners`, and read and decoded for this mosaic. Nothing decoded is
  held beyond the output being built; the price is ultralytics' too: four
  decodes per mosaic.
- Given decoded samples only: from a pool: `pool_size` consecutive input
  images are padded into one batch, and each of its outputs draws its
  companions (without replacement) from that pool. Each image is decoded
  once, but its (about four) appearances fall within a few consecutive
  outputs, so a batch often shows one image twice in different mosaics.

Either way the MixUp/CutMix partner is another output of the same pool of
`pool_size` outputs, an epoch yields one output per input image, as
ultralytics does, and outputs are then shuffled in a `shuffle_buffer` (memory
S x S x 3 bytes an output, filled before the first).

Randomness is stateless: each element's seed is derived from `seed` and a
`tf.data.Dataset.random` stream, so a run is reproducible, and each epoch (new
iteration) draws new augmentations.

Switching mosaic off for the last epochs (ultralytics' `close_mosaic`): pass a
`tf.Variable` as the probability and assign it; the pipeline reads it for every
pool (elements already prefetched keep the old value):

    mosaic = tf.Variable(1.0, trainable=False)
    ds = training_pipeline(ds, 640, hyperparameters={"mosaic": mosaic})
    model.fit(ds, epochs=300, callbacks=[CloseMosaic(mosaic, epoch=290)])

Any hyperparameter may be a `tf.Variable`, e.g. `mixup`.
"""

import keras
import tensorflow as tf

from keras_yolo.data.augment import color, geometry, mix
from keras_yolo.data.augment.mosaic import mosaic as mosaic_canvas

# ultralytics yolov5 data/hyps/hyp.scratch-low.yaml, plus YOLOv4's CutMix.
DEFAULT_HYPERPARAMETERS = {
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
    "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0,
    "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5,
    "mosaic": 1.0, "mixup": 0.0, "cutmix": 0.0,
}

# Positions in each element's vector of uniform draws.
(_MOSAIC, _CENTER_Y, _CENTER_X, _MIXUP, _MIXUP_PARTNER, _CUTMIX,
 _CUTMIX_PARTNER, _FLIPUD, _FLIPLR, _CUT_LAM, _CUT_X, _CUT_Y, _HUE, _SAT,
 _VAL) = range(15)
_NUM_DRAWS = 15
# Sub-seeds of an element.
_SEED_DRAWS, _SEED_COMPANIONS, _SEED_ORDER, _SEED_PERSPECTIVE, _SEED_BETA = \
    range(5)


def _is_zero(value):
    return isinstance(value, (int, float)) and value == 0


def _hyperparameters(hyperparameters):
    hyp = dict(DEFAULT_HYPERPARAMETERS)
    for key, value in (hyperparameters or {}).items():
        if key not in hyp:
            raise ValueError(
                f"training_pipeline: unknown hyperparameter {key!r} = "
                f"{value!r}; known: {sorted(hyp)}")
        hyp[key] = value
    return hyp


def _prepare(key, sample, image_size):
    image, target = sample
    image = tf.ensure_shape(tf.convert_to_tensor(image), [None, None, 3])
    if image.dtype != tf.uint8:
        raise TypeError(f"training_pipeline expects uint8 images, got "
                        f"{image.dtype.name}")
    boxes = tf.reshape(tf.cast(target["boxes"], tf.float32), [-1, 4])
    labels = tf.reshape(tf.cast(target["labels"], tf.int32), [-1])
    resized, boxes = geometry.resize_long_side(image, boxes, image_size)
    # One padding row: tf.data's unbatch() segfaults (TF 2.21) on a batch
    # whose boxes have zero rows, e.g. a pool of background images.
    boxes = tf.concat([boxes, tf.zeros([1, 4])], 0)
    labels = tf.concat([labels, [-1]], 0)
    return {"image": resized, "size": tf.shape(resized)[:2], "boxes": boxes,
            "labels": labels, "key": key}


def mosaic_partners(seed, num_samples):
    """The three mosaic partners of one output: `(3,)` int64 indices drawn
    uniformly, with replacement, from `[0, num_samples)` (ultralytics'
    `random.choices(self.indices, k=3)`), a pure function of the `(2,)`
    stateless `seed`.

    Example:
        >>> mosaic_partners(tf.constant([0, 7], tf.int64), 128)  # e.g. [5, 90, 33]
    """
    return tf.random.stateless_uniform([3], seed, minval=0,
                                       maxval=tf.cast(num_samples, tf.int64),
                                       dtype=tf.int64)


def _pad_rows(boxes, labels, rows):
    extra = rows - tf.shape(labels)[0]
    return (tf.pad(boxes, [[0, extra], [0, 0]]),
            tf.pad(labels, [[0, extra]], constant_values=-1))


class _PoolAugmenter:
    """Builds the outputs of one pool (see the module docstring)."""

    def __init__(self, image_size, seed, hyp):
        self.size = image_size
        self.seed = tf.constant([seed, 0], tf.int64)
        self.hyp = hyp

    def seeds(self, key):
        element = tf.random.experimental.stateless_fold_in(self.seed, key)
        return tf.random.experimental.stateless_split(element, 5)

    def centre(self, image):
        """`image` (at most `size` a side) centred on a `size` canvas of the
        fill value: `(canvas, (4,) xyxy shift of its boxes)`."""
        size = self.size
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        top, left = (size - h) // 2, (size - w) // 2
        canvas = tf.pad(image, [[top, size - h - top], [left, size - w - left],
                                [0, 0]], constant_values=geometry.FILL_VALUE)
        return canvas, tf.cast(tf.stack([left, top, left, top]), tf.float32)

    def warp(self, canvas, boxes, labels, seeds):
        """random_perspective of a mosaic or centred canvas to `size`."""
        hyp, size = self.hyp, self.size
        border = (size - tf.shape(canvas)[:2]) // 2
        image, boxes, labels = geometry.random_perspective(
            canvas, boxes, labels, seeds[_SEED_PERSPECTIVE],
            degrees=hyp["degrees"], translate=hyp["translate"],
            scale=hyp["scale"], shear=hyp["shear"],
            perspective=hyp["perspective"], border=border)
        return tf.ensure_shape(image, [size, size, 3]), boxes, labels

    def base_from_files(self, key, index, read_sample, num_samples):
        """Mosaic (uniform partners read by index) or letterbox, then
        random_perspective, of one output: `(image, boxes, labels,
        use_mosaic, key)`."""
        size, hyp = self.size, self.hyp
        seeds = self.seeds(key)
        draws = tf.random.stateless_uniform([_NUM_DRAWS], seeds[_SEED_DRAWS])
        use_mosaic = draws[_MOSAIC] < tf.cast(hyp["mosaic"], tf.float32)

        def sample(i):
            image, target = read_sample(i)
            image = tf.ensure_shape(tf.convert_to_tensor(image),
                                    [None, None, 3])
            boxes = tf.reshape(tf.cast(target["boxes"], tf.float32), [-1, 4])
            labels = tf.reshape(tf.cast(target["labels"], tf.int32), [-1])
            image, boxes = geometry.resize_long_side(image, boxes, size)
            return image, boxes, labels

        def with_mosaic():
            members = tf.concat([[tf.cast(index, tf.int64)], mosaic_partners(
                seeds[_SEED_COMPANIONS], num_samples)], 0)
            order = tf.argsort(tf.random.stateless_uniform(
                [4], seeds[_SEED_ORDER]))
            members = tf.gather(members, order)
            samples = [sample(members[j]) for j in range(4)]
            rows = tf.reduce_max(tf.stack([tf.shape(s[2])[0]
                                           for s in samples]))
            padded = [_pad_rows(s[1], s[2], rows) for s in samples]
            center = tf.cast(size / 2 + tf.stack(
                [draws[_CENTER_Y], draws[_CENTER_X]]) * size, tf.int32)
            return mosaic_canvas(
                [s[0] for s in samples],
                tf.stack([tf.shape(s[0])[:2] for s in samples]),
                tf.stack([p[0] for p in padded]),
                tf.stack([p[1] for p in padded]), center, size)

        def with_letterbox():
            image, boxes, labels = sample(index)
            canvas, shift = self.centre(image)
            return canvas, boxes + shift, labels

        image, boxes, labels = self.warp(
            *tf.cond(use_mosaic, with_mosaic, with_letterbox), seeds)
        # One padding row: unbatch() segfaults on zero-row boxes (_prepare).
        boxes = tf.concat([boxes, tf.zeros([1, 4])], 0)
        labels = tf.concat([labels, [-1]], 0)
        return {"image": image, "boxes": boxes, "labels": labels,
                "mosaic": use_mosaic, "key": key}

    def base(self, pool, k):
        """Mosaic or letterbox, then random_perspective, for output k."""
        size, hyp = self.size, self.hyp
        count = tf.shape(pool["key"])[0]
        rows = 4 * tf.shape(pool["labels"])[1]
        seeds = self.seeds(pool["key"][k])
        draws = tf.random.stateless_uniform([_NUM_DRAWS], seeds[_SEED_DRAWS])
        use_mosaic = draws[_MOSAIC] < tf.cast(hyp["mosaic"], tf.float32)

        def with_mosaic():
            # Companions without replacement (with it when the pool is small).
            keys = tf.random.stateless_uniform([count],
                                               seeds[_SEED_COMPANIONS])
            keys = tf.where(tf.range(count) == k, 2.0, keys)
            others = tf.argsort(keys)
            companions = tf.gather(
                others, tf.range(3) % tf.maximum(count - 1, 1))
            members = tf.concat([[k], companions], 0)
            order = tf.argsort(tf.random.stateless_uniform(
                [4], seeds[_SEED_ORDER]))
            members = tf.gather(members, order)
            # ultralytics: int(random.uniform(S/2, 3S/2)).
            center = tf.cast(size / 2 + tf.stack(
                [draws[_CENTER_Y], draws[_CENTER_X]]) * size, tf.int32)
            return mosaic_canvas(
                tf.gather(pool["image"], members),
                tf.gather(pool["size"], members),
                tf.gather(pool["boxes"], members),
                tf.gather(pool["labels"], members), center, size)

        def with_letterbox():
            h, w = pool["size"][k, 0], pool["size"][k, 1]
            canvas, shift = self.centre(pool["image"][k, :h, :w])
            boxes, labels = _pad_rows(pool["boxes"][k] + shift,
                                      pool["labels"][k], rows)
            return canvas, boxes, labels

        image, boxes, labels = self.warp(
            *tf.cond(use_mosaic, with_mosaic, with_letterbox), seeds)
        return image, boxes, labels, use_mosaic

    def finish(self, base, k):
        """MixUp, CutMix, HSV and flips of output k, given all base outputs."""
        images, boxes, labels, mosaics, keys = base
        hyp, size = self.hyp, self.size
        count = tf.shape(keys)[0]
        seeds = self.seeds(keys[k])
        draws = tf.random.stateless_uniform([_NUM_DRAWS], seeds[_SEED_DRAWS])
        image, box, label = images[k], boxes[k], labels[k]
        rows = tf.shape(labels)[1]

        def partner(draw):
            offset = tf.cast(draw * tf.cast(count - 1, tf.float32), tf.int32)
            return (k + 1 + offset) % count

        if not _is_zero(hyp["mixup"]):
            j = partner(draws[_MIXUP_PARTNER])
            apply = mosaics[k] & (draws[_MIXUP]
                                  < tf.cast(hyp["mixup"], tf.float32))
            ratio = mix.sample_beta(seeds[_SEED_BETA], mix.MIXUP_ALPHA,
                                    mix.MIXUP_ALPHA)
            image, box, label = tf.cond(
                apply,
                lambda: mix.mixup(image, box, label, images[j], boxes[j],
                                  labels[j], ratio),
                lambda: (image,) + _pad_rows(box, label, 2 * rows))
        if not _is_zero(hyp["cutmix"]):
            j = partner(draws[_CUTMIX_PARTNER])
            apply = draws[_CUTMIX] < tf.cast(hyp["cutmix"], tf.float32)
            rect = mix.cutmix_rectangle(
                tf.stack([draws[_CUT_LAM], draws[_CUT_X], draws[_CUT_Y]]),
                size)
            total = tf.shape(label)[0] + rows
            image, box, label = tf.cond(
                apply,
                lambda: mix.cutmix(image, box, label, images[j], boxes[j],
                                   labels[j], rect),
                lambda: (image,) + _pad_rows(box, label, total))
        gains = color.hsv_gains(
            tf.stack([draws[_HUE], draws[_SAT], draws[_VAL]]),
            hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"])
        image, box = tf.cond(
            draws[_FLIPUD] < tf.cast(hyp["flipud"], tf.float32),
            lambda: geometry.flip_up_down(image, box), lambda: (image, box))
        image, box = tf.cond(
            draws[_FLIPLR] < tf.cast(hyp["fliplr"], tf.float32),
            lambda: geometry.flip_left_right(image, box), lambda: (image, box))
        return image, box, label, gains

    def __call__(self, pool):
        count = tf.shape(pool["key"])[0]
        spec = (tf.TensorSpec([self.size, self.size, 3], tf.uint8),
                tf.TensorSpec([None, 4], tf.float32),
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([], tf.bool))
        base = tf.map_fn(lambda k: self.base(pool, k), tf.range(count),
                         fn_output_signature=spec)
        return self.finish_pool(base + (pool["key"],))

    def finish_one(self, base):
        """Flips and HSV of one base output (no MixUp/CutMix: no pool)."""
        pool = tuple(tf.expand_dims(base[name], 0) for name in
                     ("image", "boxes", "labels", "mosaic", "key"))
        image, boxes, labels, gains = self.finish(pool, 0)
        if not all(_is_zero(self.hyp[name])
                   for name in ("hsv_h", "hsv_s", "hsv_v")):
            image = color.adjust_hsv(image, gains)
        return _strip_padding(image, boxes, labels)

    def finish_pool(self, base):
        """MixUp, CutMix, flips and HSV of a pool of base outputs `(images,
        boxes, labels, mosaics, keys)`."""
        count = tf.shape(base[-1])[0]
        spec = (tf.TensorSpec([self.size, self.size, 3], tf.uint8),
                tf.TensorSpec([None, 4], tf.float32),
                tf.TensorSpec([None], tf.int32))
        images, boxes, labels, gains = tf.map_fn(
            lambda k: self.finish(base, k), tf.range(count),
            fn_output_signature=spec + (tf.TensorSpec([3], tf.float32),))
        # HSV is per pixel, so it commutes with the flips; batched, its fused
        # kernels run several times faster than inside the loop.
        if not all(_is_zero(self.hyp[name])
                   for name in ("hsv_h", "hsv_s", "hsv_v")):
            images = color.adjust_hsv(images, gains[:, None, None, :])
        return images, boxes, labels


def _strip_padding(image, boxes, labels):
    keep = labels >= 0
    return image, {"boxes": tf.boolean_mask(boxes, keep),
                   "labels": tf.boolean_mask(labels, keep)}


def training_pipeline(dataset, image_size, seed=0, hyperparameters=None,
                      pool_size=8, shuffle_buffer=16, read_sample=None,
                      num_samples=None):
    """ultralytics' training augmentation on a `tf.data.Dataset`.

    Args:
        dataset: unbatched `(image uint8 (H, W, 3), {"boxes": (N, 4) float32
            xyxy pixels of that image, "labels": (N,) int32})`, any sizes,
            unpadded (a negative label is ignored); with `read_sample`: the
            int64 indices of the images to augment, in order (shuffled,
            sharded).
        image_size: S, the output side.
        seed: int; the same seed gives the same augmentations.
        hyperparameters: dict overriding `DEFAULT_HYPERPARAMETERS`
            (ultralytics' names; values may be `tf.Variable`s).
        pool_size: images batched into one pool for Mosaic/MixUp/CutMix.
        shuffle_buffer: outputs shuffled after augmentation (0: none); a
            fresh iterator (each `model.fit` epoch) fills it before its first
            output, so it is kept small.
        read_sample: graph function `index -> (image uint8 (H, W, 3),
            {"boxes", "labels"})` as `dataset` would yield, reading sample
            `index` of `num_samples`: mosaic partners are then drawn
            uniformly from all of them (`mosaic_partners`).
        num_samples: how many indices `read_sample` accepts.

    Returns:
        Unbatched `tf.data.Dataset` of `(image uint8 (S, S, 3),
        {"boxes": (N', 4) float32 xyxy pixels of the output, "labels": (N',)
        int32})`, one output per input image.

    Example:
        >>> ds = training_pipeline(decoded, 640, seed=0,
        ...                        hyperparameters={"mixup": 0.1})
    """
    hyp = _hyperparameters(hyperparameters)
    size = int(image_size)
    autotune = tf.data.AUTOTUNE
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(keys, dataset)
    # The functions use explicit tf.cond / tf.map_fn: no autograph needed,
    # and skipping its source conversion makes building the pipeline fast.
    plain = tf.autograph.experimental.do_not_convert
    if read_sample is not None:
        if not num_samples or num_samples < 1:
            raise ValueError(f"`read_sample` needs `num_samples` >= 1; got "
                             f"{num_samples!r}.")
        augmenter = _PoolAugmenter(size, seed, hyp)
        ds = ds.map(plain(lambda key, index: augmenter.base_from_files(
            key, index, read_sample, num_samples)),
                    num_parallel_calls=autotune, deterministic=True)
        if _is_zero(hyp["mixup"]) and _is_zero(hyp["cutmix"]):
            # No partner outputs needed: each output is finished alone.
            ds = ds.map(plain(augmenter.finish_one),
                        num_parallel_calls=autotune, deterministic=True)
            if shuffle_buffer:
                ds = ds.shuffle(shuffle_buffer, seed=seed,
                                reshuffle_each_iteration=True)
            return ds
        ds = ds.padded_batch(
            pool_size,
            padded_shapes={"image": [size, size, 3], "boxes": [None, 4],
                           "labels": [None], "mosaic": [], "key": []},
            padding_values={"image": tf.constant(geometry.FILL_VALUE,
                                                 tf.uint8),
                            "boxes": 0.0, "labels": -1, "mosaic": False,
                            "key": tf.constant(0, tf.int64)})
        ds = ds.map(plain(lambda pool: augmenter.finish_pool(
            (pool["image"], pool["boxes"], pool["labels"], pool["mosaic"],
             pool["key"]))), num_parallel_calls=autotune)
        return _finish_pipeline(ds, seed, shuffle_buffer)
    ds = ds.map(plain(lambda key, sample: _prepare(key, sample, size)),
                num_parallel_calls=autotune)
    ds = ds.padded_batch(
        pool_size,
        padded_shapes={"image": [size, size, 3], "size": [2],
                       "boxes": [None, 4], "labels": [None], "key": []},
        padding_values={"image": tf.constant(geometry.FILL_VALUE, tf.uint8),
                        "size": 0, "boxes": 0.0, "labels": -1,
                        "key": tf.constant(0, tf.int64)})
    ds = ds.map(plain(_PoolAugmenter(size, seed, hyp)),
                num_parallel_calls=autotune)
    return _finish_pipeline(ds, seed, shuffle_buffer)


def _finish_pipeline(ds, seed, shuffle_buffer):
    plain = tf.autograph.experimental.do_not_convert
    ds = ds.unbatch().map(plain(_strip_padding),
                          num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed,
                        reshuffle_each_iteration=True)
    return ds


class CloseMosaic(keras.callbacks.Callback):
    """Sets the mosaic probability to 0 from `epoch` on (ultralytics'
    `close_mosaic`), given the `tf.Variable` passed to `training_pipeline`.

    Example:
        >>> mosaic = tf.Variable(1.0, trainable=False)
        >>> ds = training_pipeline(ds, 640, hyperparameters={"mosaic": mosaic})
        >>> model.fit(ds, epochs=300, callbacks=[CloseMosaic(mosaic, 290)])
    """

    def __init__(self, variable, epoch):
        super().__init__()
        self.variable = variable
        self.epoch = epoch
        self.initial = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.initial is None:
            self.initial = float(self.variable.numpy())
        self.variable.assign(0.0 if epoch >= self.epoch else self.initial)
