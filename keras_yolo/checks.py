"""Argument checks shared by layers, losses and post-processing.

Each raises a `ValueError` that names the argument and the value it got, at
construction time, so a wrong setting fails where it is written rather than
deep inside a traced step.

Example:
    >>> check_format("rel_center_xywh")          # passes
    >>> check_positive_int("num_classes", 0)     # ValueError: `num_classes` ...
    >>> check_unit_interval(iou_thres=1.5)        # ValueError: `iou_thres` ...
"""

import numbers

# The box formats, Keras 3's names (`keras_yolo.boxes.FORMATS` is this tuple).
FORMATS = (
    "xyxy",
    "yxyx",
    "xywh",
    "center_xywh",
    "rel_xyxy",
    "rel_yxyx",
    "rel_xywh",
    "rel_center_xywh",
)


def check_format(bounding_box_format, name="bounding_box_format"):
    """Raises unless `bounding_box_format` is one of `FORMATS`."""
    if bounding_box_format not in FORMATS:
        raise ValueError(
            f"`{name}` must be one of {FORMATS}; got {bounding_box_format!r}."
        )


def check_image_shape(bounding_box_format, image_shape):
    """Raises for a pixel format without `image_shape=(height, width)`.

    A layer that works on relative coordinates needs the image size to give
    pixels; `rel_` formats need nothing.
    """
    if not bounding_box_format.startswith("rel_") and image_shape is None:
        raise ValueError(
            f"bounding_box_format={bounding_box_format!r} is in pixels: pass "
            "`image_shape=(height, width)` of the input image.")


def check_positive_int(name, value):
    """Raises unless `value` is an integer >= 1 (Python or numpy; a bool is
    refused)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < 1):
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")


def check_non_negative(**values):
    """Raises naming the first keyword argument that is not `>= 0` (NaN
    included)."""
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"`{name}` must be >= 0; got {value!r}.")


def check_unit_interval(**values):
    """Raises naming the first keyword argument outside `[0, 1]` (NaN
    included).

    Example:
        >>> check_unit_interval(conf_thres=0.25, iou_thres=0.45)   # passes
    """
    for name, value in values.items():
        if not 0 <= value <= 1:
            raise ValueError(f"`{name}` must be in [0, 1]; got {value!r}.")
