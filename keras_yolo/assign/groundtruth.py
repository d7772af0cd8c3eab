"""One ground-truth policy for every objective: what a row is, what makes it invalid.

Ground truth is `{"boxes": (B, M, 4), "labels": (B, M)}` padded with label -1.
Any negative label is padding. A real row (label >= 0) is invalid when:

- its label is `>= num_classes`, or not an integer (float labels such as 1.5);
- a coordinate is NaN or infinite;
- its width or height is `<= 0` (a zero-size box has no log-size target);
- it lies wholly outside the image (the unit square for `rel_` formats; for
  pixel formats the left/top edges always, the right/bottom ones when
  `image_shape` is given).

Eager calls raise `GroundTruthError` naming the image, the row, the field and
the value. Inside a compiled step (`tf.function`, XLA) an invalid row is
masked out (treated as padding, so it cannot change the loss) and counted:
`YoloModel` reports the count as the metric `invalid_boxes`.

Example:
    >>> y = {"boxes": [[[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.0, 0.1]]],
    ...      "labels": [[1, 2]]}
    >>> invalid_rows(y["boxes"], y["labels"], 3, "rel_center_xywh")
    [[False, True]]          # zero width
"""

import numpy as np
import tensorflow as tf

from keras_yolo import boxes as box_ops

PAD_LABEL = -1


class GroundTruthError(ValueError):
    """A ground-truth row that cannot be trained on; the message names it."""


def _float_boxes(boxes):
    boxes = tf.convert_to_tensor(boxes)
    if not boxes.dtype.is_floating:
        boxes = tf.cast(boxes, tf.float32)
    return boxes


def _row_checks(boxes, labels, num_classes, bounding_box_format, image_shape):
    """Named boolean masks (...) of the reasons a row is invalid, in the
    order they are reported. Padding rows are not excluded here."""
    boxes = _float_boxes(boxes)
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_floating:
        finite_label = tf.math.is_finite(labels)
        safe = tf.where(finite_label, labels, tf.zeros_like(labels))
        non_integer = (safe != tf.floor(safe)) | ~finite_label
        too_large = labels >= tf.cast(num_classes, labels.dtype)
    else:
        non_integer = tf.zeros_like(labels, tf.bool)
        too_large = labels >= tf.cast(num_classes, labels.dtype)

    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    safe_boxes = tf.where(finite[..., None], boxes, tf.zeros_like(boxes))
    relative = bounding_box_format.startswith("rel_")
    xyxy = box_ops.convert(safe_boxes, bounding_box_format,
                           "rel_xyxy" if relative else "xyxy")
    x1, y1, x2, y2 = tf.unstack(xyxy, 4, axis=-1)
    empty = (x2 - x1 <= 0) | (y2 - y1 <= 0)
    outside = (x2 <= 0) | (y2 <= 0)
    if relative:
        outside |= (x1 >= 1) | (y1 >= 1)
    elif image_shape is not None:
        height = tf.cast(image_shape[0], xyxy.dtype)
        width = tf.cast(image_shape[1], xyxy.dtype)
        outside |= (x1 >= width) | (y1 >= height)
    return [
        ("labels", "is not an integer", non_integer),
        ("labels", f"is outside [0, {num_classes})", too_large),
        ("boxes", "is not finite", ~finite),
        ("boxes", "has zero or negative width or height", finite & empty),
        ("boxes", "lies wholly outside the image", finite & ~empty & outside),
    ]


def real_rows(labels):
    """`labels >= 0`: the rows that are not padding (NaN labels are padding)."""
    labels = tf.convert_to_tensor(labels)
    return labels >= tf.zeros((), labels.dtype)


def invalid_rows(boxes, labels, num_classes, bounding_box_format,
                 image_shape=None):
    """Real rows that break the policy of this module.

    Args:
        boxes: `(..., M, 4)` in `bounding_box_format`.
        labels: `(..., M)`, integer or float.
        num_classes: C.
        bounding_box_format: a Keras 3 box format.
        image_shape: optional `(height, width)` for pixel formats' right and
            bottom bounds (a tensor is fine).

    Returns:
        bool tensor `(..., M)`. Graph-, XLA- and dynamic-shape-safe.
    """
    checks = _row_checks(boxes, labels, num_classes, bounding_box_format,
                         image_shape)
    bad = checks[0][2]
    for _, _, mask in checks[1:]:
        bad = bad | mask
    return real_rows(labels) & bad


def describe_first_invalid(boxes, labels, num_classes, bounding_box_format,
                           image_shape=None, source=None):
    """The message for the first invalid row, or None when every row is valid.

    Rows are numbered `image i row j` for `(B, M)` inputs (`row j` for `(M,)`).
    """
    labels_np = np.asarray(labels)
    boxes_np = np.asarray(boxes)
    real = np.asarray(real_rows(labels))
    checks = [(field, why, real & np.asarray(mask)) for field, why, mask in
              _row_checks(boxes, labels, num_classes, bounding_box_format,
                          image_shape)]
    hits = np.argwhere(np.any([mask for _, _, mask in checks], axis=0))
    if not len(hits):
        return None
    index = tuple(int(i) for i in hits[0])
    field, why = next((f, w) for f, w, mask in checks if mask[index])
    value = (labels_np[index].item() if field == "labels"
             else [float(f"{v:.6g}") for v in boxes_np[index]])
    where = " ".join(f"{name} {i}" for name, i in
                     zip(("image", "row")[-len(index):], index))
    prefix = f"{source}: " if source else ""
    return (f"{prefix}{where}: field '{field}' = {value} {why} "
            f"({bounding_box_format}). Negative labels are padding.")


def sanitize(y_true, num_classes, bounding_box_format, image_shape=None):
    """Applies the policy: raise eagerly, mask inside a compiled step.

    Args:
        y_true: `{"boxes": (B, M, 4), "labels": (B, M)}`.
        num_classes: C.
        bounding_box_format: format of `y_true["boxes"]`.
        image_shape: optional `(height, width)` of the input image.

    Returns:
        `(boxes, labels)`: boxes in their float dtype (float32 for integer
        input) with padding and invalid rows set to 0, labels int32 with
        invalid rows set to -1.

    Raises:
        GroundTruthError (eagerly only) naming the first invalid row.
    """
    boxes = _float_boxes(y_true["boxes"])
    labels = tf.convert_to_tensor(y_true["labels"])
    bad = invalid_rows(boxes, labels, num_classes, bounding_box_format,
                       image_shape)
    if tf.executing_eagerly() and bool(tf.reduce_any(bad)):
        raise GroundTruthError(describe_first_invalid(
            boxes, labels, num_classes, bounding_box_format, image_shape))
    keep = real_rows(labels) & ~bad
    labels = tf.cast(tf.where(keep, labels, tf.zeros_like(labels)), tf.int32)
    labels = tf.where(keep, labels, PAD_LABEL)
    boxes = tf.where(keep[..., None], boxes, tf.zeros_like(boxes))
    return boxes, labels


def count_invalid(y_true, num_classes, bounding_box_format, image_shape=None):
    """Number of invalid real rows in a batch, as a float32 scalar."""
    bad = invalid_rows(y_true["boxes"], y_true["labels"], num_classes,
                       bounding_box_format, image_shape)
    return tf.reduce_sum(tf.cast(bad, tf.float32))
