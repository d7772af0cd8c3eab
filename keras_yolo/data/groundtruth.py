"""The padded ground-truth contract.

Everywhere in keras-yolo (datasets, losses, metrics) the ground truth of a
batch is a dict ``{"boxes": (B, M, 4) float32, "labels": (B, M) int32}``
padded to a fixed ``M`` with label ``-1``. Boxes of padded rows are ignored
whatever they hold.

`pad` builds that dict from ragged per-image lists; `validate` checks real
(unpadded) rows and names the offending image, row, field and value.
"""

import numpy as np

from keras_yolo import boxes as box_ops
from keras_yolo.assign import groundtruth as policy
from keras_yolo.assign.groundtruth import PAD_LABEL, GroundTruthError


def pad(boxes, labels, max_boxes, on_overflow="error", source=None):
    """Pads ragged per-image boxes and labels to `max_boxes` rows.

    Args:
        boxes: sequence over images of `(n_i, 4)` array-likes.
        labels: sequence over images of `(n_i,)` integer array-likes.
        max_boxes: M, rows per image after padding.
        on_overflow: `"error"` raises when an image has more than M boxes;
            `"truncate"` keeps the first M and logs how many were dropped.
        source: optional name (a file) used in error messages.

    Returns:
        `{"boxes": (B, M, 4) float32, "labels": (B, M) int32}` numpy arrays,
        padded rows with label -1 and zero boxes.
    """
    if len(boxes) != len(labels):
        raise GroundTruthError(
            f"{source or 'ground truth'}: {len(boxes)} images of boxes but "
            f"{len(labels)} of labels."
        )
    out_boxes = np.zeros((len(boxes), max_boxes, 4), np.float32)
    out_labels = np.full((len(boxes), max_boxes), PAD_LABEL, np.int32)
    dropped = 0
    for i, (b, l) in enumerate(zip(boxes, labels)):
        b = np.asarray(b, np.float32).reshape(-1, 4)
        l = np.asarray(l).reshape(-1)
        if len(b) != len(l):
            raise GroundTruthError(
                f"{source or 'ground truth'}: image {i} has {len(b)} boxes "
                f"but {len(l)} labels."
            )
        if len(b) > max_boxes:
            if on_overflow != "truncate":
                raise GroundTruthError(
                    f"{source or 'ground truth'}: image {i} has {len(b)} "
                    f"boxes, more than max_boxes={max_boxes}; raise "
                    "max_boxes or pass on_overflow='truncate'."
                )
            dropped += len(b) - max_boxes
            b, l = b[:max_boxes], l[:max_boxes]
        out_boxes[i, : len(b)] = b
        out_labels[i, : len(l)] = l
    if dropped:
        import logging

        logging.getLogger("keras_yolo").warning(
            "%s: dropped %d boxes beyond max_boxes=%d.",
            source or "ground truth", dropped, max_boxes,
        )
    return {"boxes": out_boxes, "labels": out_labels}


def validate(y_true, num_classes, bounding_box_format, image_shape=None,
             source=None, tolerance=1e-3):
    """Checks a padded ground-truth dict; raises on the first bad row.

    Applies the policy every loss applies (`keras_yolo.assign.groundtruth`):
    on real rows (label >= 0; any negative label is padding), labels must be
    integers in `[0, num_classes)`, coordinates finite, width and height
    positive, and the box not wholly outside the image. Data is held to one
    more rule than a loss: no coordinate may stick out of the image by more
    than `tolerance` (of a pixel's image side, or of the unit square for
    `rel_` formats), which catches boxes written in the wrong format.

    Args:
        y_true: `{"boxes": (B, M, 4), "labels": (B, M)}` array-likes (numpy or
            eager tensors); `(M, 4)` / `(M,)` for one image.
        num_classes: C.
        bounding_box_format: format of `y_true["boxes"]`.
        image_shape: `(height, width)`, needed for pixel formats' bounds.
        source: optional name (a file) for the messages.

    Raises:
        GroundTruthError naming the image, the row, the field and the value.
    """
    where = source or "ground truth"
    boxes = np.asarray(y_true["boxes"], np.float64)
    labels = np.asarray(y_true["labels"])
    if boxes.ndim == 2:
        boxes, labels = boxes[None], labels[None]
    if boxes.shape[:-1] != labels.shape or boxes.shape[-1] != 4:
        raise GroundTruthError(
            f"{where}: boxes of shape {boxes.shape} do not match labels of "
            f"shape {labels.shape} (want (B, M, 4) and (B, M))."
        )
    message = policy.describe_first_invalid(
        boxes, labels, num_classes, bounding_box_format, image_shape, where)
    if message:
        raise GroundTruthError(message)
    real = np.asarray(policy.real_rows(labels))
    xyxy = np.asarray(
        box_ops.convert(boxes, bounding_box_format,
                        "rel_xyxy" if bounding_box_format.startswith("rel_")
                        else "xyxy")
    )
    if bounding_box_format.startswith("rel_"):
        upper, tol = np.array([1.0, 1.0]), tolerance
    elif image_shape is not None:
        upper = np.array([image_shape[1], image_shape[0]], np.float64)
        tol = tolerance * max(image_shape[0], image_shape[1])
    else:
        upper = None
    if upper is not None:
        outside = np.any(xyxy[..., :2] < -tol, axis=-1) | np.any(
            xyxy[..., 2:] > upper + tol, axis=-1
        )
        bad = np.argwhere(real & outside)
        if len(bad):
            i, j = bad[0]
            raise GroundTruthError(
                f"{where}: image {i} row {j}: field 'boxes' = "
                f"{boxes[i, j].tolist()} lies outside the image "
                f"({bounding_box_format}, bounds {upper.tolist()})."
            )
