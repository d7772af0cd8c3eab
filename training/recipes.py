"""Per-version training recipes: model, loss, decode configuration.

A recipe is what `train` needs for one YOLO version on a dataset of a given
image size and class count: a function building the network, its loss, and
the decode configuration (`serving.detector`'s `decode.json`) from which the
evaluation and the export build the decode layer. The small models suit
CPU runs (the shapes demo); `model="yolov5s"` etc. name a full-size
`keras_yolo.models.build` network instead.

Anchors: each version's published anchors, scaled from the input size they
were fitted at to `image_size` (objects of the shapes set span 3% to 60% of
the image, as COCO's do at their reference size). ultralytics keeps the
yaml's pixel anchors at any size and relies on autoanchor; measured on the
shapes set at 128 px, the pixel anchors pass autoanchor (BPR 0.999) yet
match 0.37 anchors per target on P5 against 1.43 scaled (3.81 against 5.25
on all levels, ratio fitness 0.663 against 0.732); at 320 and 640 px the
two are equivalent (fitness 0.732 / 0.727, 0.733 / 0.728). So the scaled
anchors stay, and `autoanchor` checks them against the training labels as
ultralytics does (v5: its ratio assignment is what the check measures).
"""

import dataclasses

import numpy as np

from keras_yolo import anchors as default_anchors
from keras_yolo import versions


def __getattr__(name):
    if name == "VERSIONS":  # the registered versions (keras_yolo.versions)
        return versions.names()
    raise AttributeError(f"module 'training.recipes' has no attribute {name!r}")


@dataclasses.dataclass
class Recipe:
    version: str
    build_model: object   # () -> keras.Model
    build_loss: object    # () -> keras.losses.Loss
    decode_config: dict   # serving's decode.json (`keras_yolo.versions`)
    image_size: int
    num_classes: int
    bounding_box_format: str = "rel_center_xywh"
    head: dict = None     # the arguments loss and decode layer share

    def decode_layer(self, bounding_box_format=None):
        return versions.decode_layer(self.decode_config,
                                     bounding_box_format or
                                     self.bounding_box_format)

    def postprocess(self, bounding_box_format=None, **nms_kwargs):
        """Raw outputs -> detections (decode + NMS at evaluation settings)."""
        from keras_yolo.layers import NonMaxSuppression

        fmt = bounding_box_format or self.bounding_box_format
        decode = self.decode_layer(fmt)
        nms = NonMaxSuppression(
            bounding_box_format=fmt,
            **{**versions.get(self.version).eval_nms, **nms_kwargs})
        return lambda raw: nms(decode(raw))


def scaled_anchors(version, image_size):
    """The version's default anchors for square `image_size` inputs."""
    return versions.get(version).default_anchors(image_size)


def make_recipe(version="v5", num_classes=3, image_size=128, model=None,
                bounding_box_format="rel_center_xywh", anchors=None,
                hyperparameters=None, **loss_kwargs):
    """The recipe of a registered `version` ("v1".."v5",
    `keras_yolo.versions.names()`).

    Args:
        model: None for the version's small model, or a
            `keras_yolo.models.build` name (e.g. "yolov5s").
        anchors: `(levels, A, 2)` pixel anchors replacing the version's
            (e.g. from `autoanchor`); None keeps them.
        hyperparameters: loss hyperparameters as the version's reference
            training configuration names them (v5: hyp.scratch-low's box,
            obj, cls, unscaled; the recipe scales them as train.py does).
        loss_kwargs: loss arguments overriding the recipe's, as the loss
            takes them (v5's box, obj, cls already scaled).
    """
    spec = versions.get(version)
    if image_size % 32:
        raise ValueError(f"`image_size` must be a multiple of 32; "
                         f"got {image_size}.")
    shape = (image_size, image_size, 3)
    fmt = bounding_box_format
    if anchors is not None:
        defaults = spec.default_anchors(image_size, model)
        if defaults is None:
            raise ValueError(f"{version} has no anchors.")
        expected = np.shape(defaults)
        if np.shape(anchors) != expected:
            raise ValueError(
                f"`anchors` must have the shape {expected} of {version}'s "
                f"anchors; got {np.shape(anchors)}.")
        anchors = np.asarray(anchors, np.float64).tolist()
    head = spec.head_arguments(image_size, model, anchors)
    if model is None:
        build_model = lambda: spec.small_model(num_classes, image_size)  # noqa: E731
    else:
        from keras_yolo import models

        build_model = lambda: models.build(model, num_classes, shape)  # noqa: E731
    num_levels = len(head.get("strides", ()))
    loss_options = {**spec.loss_arguments(num_classes, image_size,
                                          num_levels, hyperparameters),
                    **loss_kwargs}
    build_loss = lambda: spec.loss(  # noqa: E731
        num_classes, bounding_box_format=fmt, **head, **loss_options)
    decode = versions.make_decode_layer(version, num_classes, head,
                                        image_size, fmt)
    config = versions.decode_config(decode, version, shape, num_classes)
    return Recipe(version, build_model, build_loss, config, image_size,
                  num_classes, fmt, head)


def default_anchors_of(version, model, image_size):
    """The recipe's anchors before any autoanchor (pixels)."""
    return versions.get(version).default_anchors(image_size, model)


def dataset_label_sizes(dataset, image_size,
                        bounding_box_format="rel_center_xywh"):
    """`(N, 2)` pixel `(w, h)` of every label of an unbatched `(image,
    {"boxes", "labels"})` dataset of square `image_size` inputs."""
    from keras_yolo import boxes as box_ops

    sizes = []
    for _, gt in dataset.map(lambda x, y: (0, y)).as_numpy_iterator():
        keep = gt["labels"] >= 0
        if keep.any():
            boxes = np.asarray(box_ops.convert(
                gt["boxes"][keep], bounding_box_format, "rel_xywh",
                image_shape=(image_size, image_size)))
            sizes.append(boxes[:, 2:] * image_size)
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))


def autoanchor(anchors, dataset, image_size, anchor_t=4.0, seed=0,
               bounding_box_format="rel_center_xywh", **kwargs):
    """ultralytics' check_anchors on a training dataset: `anchors` if
    their best possible recall on its labels is above 0.98, else k-means +
    genetic anchors when those recall more (`keras_yolo.anchors`).

    Returns:
        `(anchors, report)` as `keras_yolo.anchors.check_anchors`.

    Example:
        >>> new, report = autoanchor(recipe.head["anchors"],
        ...                          train_ds, 640)
        >>> recipe = make_recipe("v5", 3, 640, anchors=new)
    """
    wh = dataset_label_sizes(dataset, image_size, bounding_box_format)
    new, report = default_anchors.check_anchors(
        wh, anchors, anchor_t=anchor_t, image_size=image_size, seed=seed,
        **kwargs)
    report["labels"] = int(len(wh))
    return new.tolist(), report
