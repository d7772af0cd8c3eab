"""Random training shapes (YOLOv4's freebie, ultralytics' `--multi-scale`).

Every `every` batches a new input side is drawn from a few fixed sizes
(multiples of the largest stride), and the batch and its boxes are resized to
it. With a fixed set of sizes a compiled train step is traced once per size,
not once per batch. ultralytics draws any multiple of 32 in [0.5 S, 1.5 S];
`multi_scale_sizes` gives a few evenly spaced ones of that range.
"""

import tensorflow as tf

_X_SCALED = {  # which coordinates are horizontal, per pixel format
    "xyxy": (True, False, True, False),
    "yxyx": (False, True, False, True),
    "xywh": (True, False, True, False),
    "center_xywh": (True, False, True, False),
}


def multi_scale_sizes(image_size, stride=32, low=0.5, high=1.5, count=5):
    """`count` multiples of `stride`, evenly spread over
    `[low x image_size, high x image_size]`.

    Example:
        >>> multi_scale_sizes(640)
        (320, 480, 640, 800, 960)
    """
    lo, hi = low * image_size, high * image_size
    sizes = {int(round((lo + (hi - lo) * i / max(count - 1, 1)) / stride))
             * stride for i in range(count)}
    return tuple(sorted(s for s in sizes if s > 0))


def _resize_batch(images, target, size, bounding_box_format):
    shape = tf.shape(images)
    resized = tf.image.resize(images, [size, size], method="bilinear")
    if images.dtype == tf.uint8:
        resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255),
                          tf.uint8)
    else:
        resized = tf.cast(resized, images.dtype)
    if bounding_box_format.startswith("rel_"):
        return resized, target
    sx = tf.cast(size, tf.float32) / tf.cast(shape[2], tf.float32)
    sy = tf.cast(size, tf.float32) / tf.cast(shape[1], tf.float32)
    factor = tf.stack([sx if is_x else sy
                       for is_x in _X_SCALED[bounding_box_format]])
    target = dict(target)
    target["boxes"] = tf.cast(target["boxes"], tf.float32) * factor
    return resized, target


def multi_scale(dataset, sizes, every=10, seed=0,
                bounding_box_format="rel_center_xywh"):
    """Resizes each group of `every` batches to a random side from `sizes`.

    Args:
        dataset: batched `(images (B, H, W, 3), {"boxes": (B, M, 4),
            "labels": (B, M)})`.
        sizes: the allowed sides, e.g. `multi_scale_sizes(640)`.
        every: batches between two draws (ultralytics draws every batch;
            a train step costs a retrace only the first time a size appears).
        seed: int; each new iteration (epoch) draws a new sequence.
        bounding_box_format: of `boxes`; relative formats are left as they are,
            pixel formats are scaled.

    Returns:
        The dataset with `(B, s, s, 3)` images, `s` in `sizes`.

    Example:
        >>> ds = multi_scale(ds.padded_batch(16), multi_scale_sizes(640),
        ...                  every=10, bounding_box_format="xyxy")
    """
    if bounding_box_format not in _X_SCALED and \
            not bounding_box_format.startswith("rel_"):
        raise ValueError(f"multi_scale: unknown bounding_box_format "
                         f"{bounding_box_format!r}")
    if every < 1:
        raise ValueError(f"multi_scale: every must be >= 1, got {every}")
    table = tf.constant(sorted(int(s) for s in sizes), tf.int32)
    choices = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    choices = choices.flat_map(lambda r: tf.data.Dataset.from_tensors(
        tf.gather(table, tf.math.floormod(r, len(sizes)))).repeat(every))
    resize = tf.autograph.experimental.do_not_convert(
        lambda batch, size: _resize_batch(batch[0], batch[1], size,
                                          bounding_box_format))
    return tf.data.Dataset.zip(dataset, choices).map(
        resize, num_parallel_calls=tf.data.AUTOTUNE)
