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

VERSIONS = ("v1", "v2", "v3", "v4", "v5")
# Input size each version's default anchors are scaled from. yolov5 trains
# its (YOLOv3's) anchors at 640, but at 640 they are small for objects
# spanning 3% to 60% of the image; the shapes benchmarks scale v3's and
# v5's from darknet's 416, as here.
REFERENCE_SIZE = {"v2": 416, "v3": 416, "v4": 608, "v5": 416}
DEFAULT_ANCHORS = {"v2": default_anchors.YOLOV2_VOC_ANCHORS,
                   "v3": default_anchors.YOLOV3_ANCHORS,
                   "v4": default_anchors.YOLOV4_ANCHORS,
                   "v5": default_anchors.YOLOV5_ANCHORS}
# Without `small_v5`: yolov5n's depth at half its width (ultralytics' yaml
# multiples), a size that trains in minutes on two CPU cores.
DEMO_V5_MULTIPLES = (0.33, 0.125)


@dataclasses.dataclass
class Recipe:
    version: str
    build_model: object   # () -> keras.Model
    build_loss: object    # () -> keras.losses.Loss
    decode_config: dict   # serving's decode.json
    image_size: int
    num_classes: int
    bounding_box_format: str = "rel_center_xywh"

    def decode_layer(self, bounding_box_format=None):
        from serving.detector import make_decode_layer

        return make_decode_layer(self.decode_config,
                                 bounding_box_format or
                                 self.bounding_box_format)

    def postprocess(self, bounding_box_format=None, **nms_kwargs):
        """Raw outputs -> detections (decode + NMS at evaluation settings)."""
        from keras_yolo.postprocess import NonMaxSuppression
        from serving.detector import EVAL_NMS

        fmt = bounding_box_format or self.bounding_box_format
        decode = self.decode_layer(fmt)
        nms = NonMaxSuppression(bounding_box_format=fmt,
                                **{**EVAL_NMS, **nms_kwargs})
        return lambda raw: nms(decode(raw))


def scaled_anchors(version, image_size):
    anchors = np.asarray(DEFAULT_ANCHORS[version], np.float64)
    return (anchors * image_size / REFERENCE_SIZE[version]).tolist()


def make_recipe(version="v5", num_classes=3, image_size=128, model=None,
                bounding_box_format="rel_center_xywh", anchors=None,
                **loss_kwargs):
    """The recipe of `version` ("v1".."v5").

    Args:
        model: None for the version's small model, or a
            `keras_yolo.models.build` name (e.g. "yolov5s").
        anchors: `(levels, A, 2)` pixel anchors replacing the version's
            (e.g. from `autoanchor`); None keeps them.
        loss_kwargs: loss hyperparameters overriding the recipe's.
    """
    if version not in VERSIONS:
        raise ValueError(f"`version` must be one of {VERSIONS}; "
                         f"got {version!r}.")
    if image_size % 32:
        raise ValueError(f"`image_size` must be a multiple of 32; "
                         f"got {image_size}.")
    from keras_yolo import losses, models

    shape = (image_size, image_size, 3)
    config = {"version": version, "num_classes": num_classes,
              "input_shape": list(shape)}
    fmt = bounding_box_format

    if model is not None:
        spec = models.model_spec(model)
        build_model = lambda: models.build(model, num_classes, shape)  # noqa: E731
        strides = list(spec["strides"])
        if anchors is None and spec["anchors"] is not None:
            anchors = default_anchors_of(version, model, image_size)
    else:
        strides = [32] if version == "v2" else [8, 16, 32]
        if anchors is None and version != "v1":
            anchors = scaled_anchors(version, image_size)
        build_model = _small_model(version, num_classes, image_size)

    if anchors is not None:
        if version == "v1":
            raise ValueError("YOLOv1 has no anchors.")
        if np.shape(anchors) != np.shape(default_anchors_of(version, model,
                                                          image_size)):
            raise ValueError(
                f"`anchors` must have the shape "
                f"{np.shape(default_anchors_of(version, model, image_size))}"
                f" of {version}'s anchors; got {np.shape(anchors)}.")
        anchors = np.asarray(anchors, np.float64).tolist()

    if version == "v1":
        grid = image_size // 32 if model is None else 7
        config.update(grid_size=grid, boxes_per_cell=2, sqrt=None,
                      softmax=None, parametrization="logistic")
        if model is None:
            build_model = _small_model("v1", num_classes, image_size, grid)
        loss = lambda: losses.YoloV1Loss(  # noqa: E731
            num_classes, grid_size=grid, boxes_per_cell=2,
            bounding_box_format=fmt, parametrization="logistic",
            **loss_kwargs)
    else:
        config.update(anchors=anchors, strides=strides)
        if version == "v2":
            loss = lambda: losses.YoloV2Loss(  # noqa: E731
                num_classes, anchors=anchors, strides=tuple(strides),
                bounding_box_format=fmt, **loss_kwargs)
        elif version == "v3":
            loss = lambda: losses.YoloV3Loss(  # noqa: E731
                num_classes, anchors=anchors, strides=tuple(strides),
                bounding_box_format=fmt, **loss_kwargs)
        elif version == "v4":
            from keras_yolo.losses.yolo_v4 import YOLOV4_SCALE_X_Y

            config["scale_x_y"] = YOLOV4_SCALE_X_Y
            loss = lambda: losses.YoloV4Loss(  # noqa: E731
                num_classes, anchors=anchors, strides=tuple(strides),
                bounding_box_format=fmt, **loss_kwargs)
        else:
            gains = losses.scale_hyperparameters(
                num_levels=len(strides), num_classes=num_classes,
                image_size=image_size)
            loss = lambda: losses.YoloV5Loss(  # noqa: E731
                num_classes, anchors=anchors, strides=tuple(strides),
                bounding_box_format=fmt, **{**gains, **loss_kwargs})
    return Recipe(version, build_model, loss, config, image_size,
                  num_classes, fmt)


def default_anchors_of(version, model, image_size):
    """The recipe's anchors before any autoanchor (pixels)."""
    if version == "v1":
        return None
    if model is not None:
        from keras_yolo import models

        spec = models.model_spec(model)
        return (np.asarray(spec["anchors"], np.float64) * image_size
                / spec["input_shape"][0]).tolist()
    return scaled_anchors(version, image_size)


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
        >>> new, report = autoanchor(recipe.decode_config["anchors"],
        ...                          train_ds, 640)
        >>> recipe = make_recipe("v5", 3, 640, anchors=new)
    """
    wh = dataset_label_sizes(dataset, image_size, bounding_box_format)
    new, report = default_anchors.check_anchors(
        wh, anchors, anchor_t=anchor_t, image_size=image_size, seed=seed,
        **kwargs)
    report["labels"] = int(len(wh))
    return new.tolist(), report


def _small_model(version, num_classes, image_size, grid=None):
    from keras_yolo import models

    if version == "v1":
        from keras_yolo.models.small_v1 import small_v1

        return lambda: small_v1(num_classes, grid_size=grid,
                                input_size=image_size)
    if version == "v2":
        from keras_yolo.models.small_v2 import small_v2

        return lambda: small_v2(num_classes, input_size=image_size)
    if version == "v3":
        from keras_yolo.models.small_v3 import small_v3

        return lambda: small_v3(num_classes, input_size=image_size)
    if version == "v4":
        from keras_yolo.models.small_v4 import small_v4

        return lambda: small_v4(num_classes,
                                input_shape=(image_size, image_size, 3))
    try:
        from keras_yolo.models.small_v5 import small_v5
    except ImportError:
        depth, width = DEMO_V5_MULTIPLES
        return lambda: models.yolov5(
            num_classes, (image_size, image_size, 3), depth_multiple=depth,
            width_multiple=width, name="yolov5_demo")
    return lambda: small_v5(num_classes, input_size=image_size)
