"""`plot_batch`: a PNG grid of images with their labelled boxes."""

import math
import os

import numpy as np

from keras_yolo import boxes as box_ops


def plot_batch(images, y_true, class_names, bounding_box_format, path,
               cols=None, scale=3.0):
    """Writes a grid of images with their ground-truth boxes and class names.

    Draws with `keras.visualization.plot_bounding_box_gallery` (matplotlib,
    no display needed); padded rows (label -1) are not drawn.

    Args:
        images: `(B, H, W, 3)` float images in [0, 1] (tensor or numpy).
        y_true: `{"boxes": (B, M, 4), "labels": (B, M)}` in
            `bounding_box_format`.
        class_names: list of C names.
        bounding_box_format: format of `y_true["boxes"]`.
        path: the PNG file to write.
        cols: images per row (default about sqrt(B)).
        scale: inches per image in the figure.

    Returns:
        `path`.

    Example:
        >>> ds = keras_yolo.data.load("coco128/coco128.yaml", split="val")
        >>> images, y = next(iter(ds.batch(16)))
        >>> plot_batch(images, y, ds.class_names, "rel_center_xywh", "grid.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import keras
    import matplotlib.pyplot as plt

    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` must be (B, H, W, 3); got shape "
                         f"{images.shape}.")
    height, width = images.shape[1:3]
    boxes = np.asarray(box_ops.convert(y_true["boxes"], bounding_box_format,
                                       "xyxy", image_shape=(height, width)))
    labels = np.asarray(y_true["labels"]).astype(np.int32)
    count = len(images)
    cols = cols or int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / cols))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # uint8 in (0, 255): Keras 3.15's gallery with value_range=(0, 1)
    # rescales the already drawn uint8 images a second time (colours wrap).
    pixels = np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    keras.visualization.plot_bounding_box_gallery(
        pixels, "xyxy",
        y_true={"boxes": boxes, "labels": labels},
        value_range=(0, 255), rows=rows, cols=cols, scale=scale,
        class_mapping=dict(enumerate(class_names)),
        font_scale=max(0.4, height / 640), line_thickness=2, path=path)
    plt.close("all")
    return path
