"""A synthetic detection task: coloured shapes on textured noise.

Each image holds 1 to `max_objects` objects of `num_classes` kinds (circle,
rectangle, triangle, diamond, cross, star), filled or outlined, of widely
varying size (from about 3% to 60% of the image side) and aspect ratio, in
random colours, some overlapping, on a textured background. Boxes are exact:
the tight box of each object's visible pixels after later objects were
painted over it; objects left less than `MIN_VISIBLE` visible are dropped.

The generator is seeded per image (`seed`, image index), so an image does not
depend on how many were asked for or in which order they are read.
"""

import numpy as np
import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.data.groundtruth import pad

CLASS_NAMES = ("circle", "rectangle", "triangle", "diamond", "cross", "star")
MIN_VISIBLE = 0.4  # fraction of an object's own pixels that must stay visible


def _background(rng, size):
    """Smooth colour noise plus fine grain: a texture, not a flat colour."""
    coarse = rng.uniform(0, 255, (size // 16 + 2, size // 16 + 2, 3))
    reps = int(np.ceil(size / (coarse.shape[0] - 1)))
    smooth = np.kron(coarse, np.ones((reps, reps, 1)))[:size, :size]
    # A box blur (cumulative sums) turns the blocks into blobs.
    k = max(reps, 3)
    padded = np.pad(smooth, ((k, k), (k, k), (0, 0)), mode="edge")
    c = padded.cumsum(0).cumsum(1)
    blurred = (c[2 * k:, 2 * k:] - c[:-2 * k, 2 * k:] - c[2 * k:, :-2 * k]
               + c[:-2 * k, :-2 * k]) / (2 * k) ** 2
    blurred = blurred[:size, :size]
    grain = rng.normal(0, 12, (size, size, 3))
    return 0.6 * blurred + 0.4 * 128 + grain


def _shape_mask(kind, xs, ys, cx, cy, w, h, angle):
    """Boolean mask of a filled shape over pixel-centre grids xs, ys."""
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((xs - cx) * cos + (ys - cy) * sin) / (w / 2)
    v = (-(xs - cx) * sin + (ys - cy) * cos) / (h / 2)
    if kind == "circle":
        return u**2 + v**2 <= 1
    if kind == "rectangle":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if kind == "triangle":  # apex up, base at v = 1
        return (v <= 1) & (np.abs(u) <= (v + 1) / 2)
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if kind == "cross":
        return ((np.abs(u) <= 1) & (np.abs(v) <= 0.3)) | (
            (np.abs(v) <= 1) & (np.abs(u) <= 0.3)
        )
    # star: five points, radius modulated by angle
    r = np.sqrt(u**2 + v**2)
    theta = np.arctan2(v, u)
    return r <= 0.55 + 0.45 * np.abs(np.cos(2.5 * theta))


def _erode(mask, t):
    """Pixels at least `t` pixels inside `mask` (4-neighbour erosion)."""
    inner = mask.copy()
    for _ in range(t):
        p = np.pad(inner, 1)
        inner = (inner & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2]
                 & p[1:-1, 2:])
    return inner


def render_image(index, image_size=320, num_classes=3, max_objects=10,
                 seed=0):
    """One image and its objects.

    Returns:
        image: `(image_size, image_size, 3)` uint8.
        boxes: `(n, 4)` float32 `xyxy` pixel boxes of the visible objects.
        labels: `(n,)` int32 class ids.
    """
    rng = np.random.default_rng([seed, index])
    size = image_size
    image = _background(rng, size)
    owner = np.full((size, size), -1, np.int32)
    own_pixels = []
    labels = []
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    num = int(rng.integers(1, max_objects + 1))
    for obj in range(num):
        kind = int(rng.integers(0, num_classes))
        # Log-uniform size: many small objects, some large.
        side = size * np.exp(rng.uniform(np.log(0.03), np.log(0.6)))
        aspect = np.exp(rng.uniform(np.log(0.4), np.log(2.5)))
        w = float(np.clip(side * np.sqrt(aspect), 6, size * 0.9))
        h = float(np.clip(side / np.sqrt(aspect), 6, size * 0.9))
        cx = rng.uniform(w / 2, size - w / 2)
        cy = rng.uniform(h / 2, size - h / 2)
        # Rotation only for circles and stars keeps box and shape tight.
        angle = rng.uniform(0, np.pi) if CLASS_NAMES[kind] == "star" else 0.0
        x0, x1 = int(max(cx - w, 0)), int(min(cx + w + 1, size))
        y0, y1 = int(max(cy - h, 0)), int(min(cy + h + 1, size))
        mask = np.zeros((size, size), bool)
        mask[y0:y1, x0:x1] = _shape_mask(
            CLASS_NAMES[kind], xs[y0:y1, x0:x1], ys[y0:y1, x0:x1],
            cx, cy, w, h, angle,
        )
        if mask.sum() < 12:
            continue
        outlined = rng.uniform() < 0.3 and min(w, h) > 14
        paint = mask
        if outlined:
            thickness = int(max(2, min(w, h) * 0.12))
            paint = mask & ~_erode(mask, thickness)
        colour = rng.uniform(0, 255, 3)
        # Keep shapes distinguishable from the background they land on.
        local = image[mask].mean(0)
        if np.abs(colour - local).sum() < 150:
            colour = np.where(local > 128, colour * 0.3, 255 - 0.3 * (255 - colour))
        image[paint] = colour + rng.normal(0, 6, (int(paint.sum()), 3))
        owner[paint] = obj
        own_pixels.append((obj, int(paint.sum())))
        labels.append(kind)
    boxes_out, labels_out = [], []
    for (obj, total), kind in zip(own_pixels, labels):
        visible = owner == obj
        count = int(visible.sum())
        if count < MIN_VISIBLE * total or count < 8:
            continue
        rows = np.flatnonzero(visible.any(1))
        cols = np.flatnonzero(visible.any(0))
        boxes_out.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        labels_out.append(kind)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return (image, np.asarray(boxes_out, np.float32).reshape(-1, 4),
            np.asarray(labels_out, np.int32))


def generate(num_images=512, image_size=320, num_classes=3, max_boxes=20,
             seed=0, max_objects=None):
    """All images as numpy arrays: `(N, S, S, 3)` uint8 and padded `xyxy`
    ground truth `{"boxes": (N, M, 4), "labels": (N, M)}` in pixels."""
    if not 1 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(
            f"`num_classes` must be in [1, {len(CLASS_NAMES)}]; "
            f"got {num_classes}."
        )
    if image_size < 32:
        raise ValueError(f"`image_size` must be >= 32; got {image_size}.")
    max_objects = max_objects or min(max_boxes, 12)
    images, boxes, labels = [], [], []
    for i in range(num_images):
        image, b, l = render_image(i, image_size, num_classes, max_objects,
                                   seed)
        images.append(image)
        boxes.append(b)
        labels.append(l)
    gt = pad(boxes, labels, max_boxes, on_overflow="error", source="shapes")
    return np.stack(images), gt


def shapes(num_images=512, image_size=320, num_classes=3, max_boxes=20,
           seed=0, bounding_box_format="rel_center_xywh", max_objects=None):
    """The synthetic shapes dataset as an unbatched `tf.data.Dataset`.

    Args:
        num_images: images to generate.
        image_size: side of the square images, in pixels.
        num_classes: how many of `CLASS_NAMES` to use (1 to 6).
        max_boxes: M, the padded number of ground-truth rows.
        seed: the dataset seed; image i depends only on (seed, i).
        bounding_box_format: format of the boxes yielded.
        max_objects: most objects drawn per image (default min(M, 12)).

    Returns:
        Dataset of `(image, {"boxes": (M, 4), "labels": (M,)})`, images
        float32 in [0, 1], padded rows with label -1.

    Example:
        >>> ds = shapes(num_images=8, image_size=128).batch(4)
        >>> images, y_true = next(iter(ds))
    """
    images, gt = generate(num_images, image_size, num_classes, max_boxes,
                          seed, max_objects)
    real = gt["labels"] >= 0
    converted = box_ops.convert(gt["boxes"], "xyxy", bounding_box_format,
                                image_shape=(image_size, image_size)).numpy()
    converted = np.where(real[..., None], converted, 0.0).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(
        (images, {"boxes": converted, "labels": gt["labels"]})
    )
    return ds.map(
        lambda image, y: (tf.cast(image, tf.float32) / 255.0, y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
