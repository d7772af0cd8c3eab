"""The version registry: what the training, serving and import code need to
know of each YOLO version, in one record per version.

    >>> from keras_yolo import versions
    >>> versions.names()
    ('v1', 'v2', 'v3', 'v4', 'v5', 'v8')
    >>> v5 = versions.get("v5")
    >>> v5.loss, v5.decode                 # (YoloV5Loss, YoloV5Decode)
    >>> head = v5.head_arguments(image_size=320)     # {"anchors", "strides"}
    >>> loss = v5.loss(3, bounding_box_format="rel_center_xywh", **head)
    >>> decode = versions.make_decode_layer("v5", 3, head, 320, "xyxy")
    >>> config = versions.decode_config(decode, "v5", (320, 320, 3), 3)
    >>> versions.decode_layer(config, "xyxy")        # the same layer again

A version is a `Version` record; adding one (e.g. YOLOv8) is its own modules
(loss, decode layer, model) plus one `register(Version(...))` call
(see `/tmp/iss/registry_api.md` and the built-in entries at the end of this
module). Nothing else dispatches on the version name: the training recipes
and command line, serving's decoding and NMS defaults, the weight importers'
decoders and `models.build`'s named networks all read this registry.

Head arguments: the keyword arguments the loss and the decode layer of a
version share, so the two can never disagree: `anchors` (pixels, nested
`(levels, A, 2)`) and `strides` for the anchor versions, `grid_size`,
`boxes_per_cell` and `parametrization` for YOLOv1.

Decode configuration (`<model>.decode.json`, written beside a model):
`{"version", "layer", "input_shape", "num_classes", **decode.get_config()}`:
the decode layer's own `get_config()` plus what identifies it. Files written
before this format (no "layer" key: a recipe's, or a weight importer's
`model.decode_config`) still load (`decode_layer` translates them).
"""

import dataclasses
import inspect
import types
from typing import Callable, Mapping, Optional

import numpy as np

# NMS defaults: ultralytics detect.py (conf 0.25, IoU 0.45; 100 boxes kept
# here) for serving, val.py (conf 0.001, IoU 0.6, 300) for mAP evaluation.
SERVING_NMS = types.MappingProxyType(
    {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 100})
EVAL_NMS = types.MappingProxyType(
    {"conf_thres": 0.001, "iou_thres": 0.6, "max_det": 300})
# Keys of a decode configuration that are not decode layer arguments.
METADATA_KEYS = ("version", "layer", "input_shape", "num_classes")
# Layer arguments every Keras layer's get_config holds.
_BASE_LAYER_KEYS = ("dtype", "trainable")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A named full-size network of a version (`keras_yolo.models.build`).

    Attributes:
        builder: `(num_classes=, input_shape=, name=, **options) -> YoloModel`.
        input_shape: its published input `(H, W, 3)`.
        strides: output strides, ascending.
        anchors: its published anchors in pixels of `input_shape`, nested
            `(levels, A, 2)`; None for a version without anchors.
    """
    builder: Callable
    input_shape: tuple
    strides: tuple
    anchors: Optional[object] = None


@dataclasses.dataclass(frozen=True)
class Version:
    """Everything version-specific the library's callers need.

    Attributes:
        name: the registry key, e.g. `"v5"` (the `--version` of the CLI and
            the `"version"` of a decode configuration).
        loss: the `keras.losses.Loss` class; called as
            `loss(num_classes, bounding_box_format=..., **head, **options)`.
        decode: the decode layer class; called with the same head arguments
            (plus `num_classes` / `image_shape` when its `__init__` takes
            them) and `bounding_box_format`.
        small_model: `(num_classes, image_size) -> keras.Model`: the small
            network of the recipes (CPU-sized, square inputs).
        strides: the small model's output strides, ascending.
        anchors: default anchors (pixels at `reference_size`, nested
            `(levels, A, 2)`); None: anchor-free. Scaled to the image size.
        reference_size: input size `anchors` were fitted at.
        models: `models.build` names of the version's full-size networks.
        head: `(image_size, strides, anchors, model) -> dict`: the head
            arguments shared by loss and decode layer; None: `{"anchors",
            "strides"}`. `model` is the `models.build` name or None.
        loss_defaults: `(num_classes, image_size, num_levels, **hyp) ->
            dict`: the loss arguments of the reference configuration's
            hyperparameters `hyp` (e.g. v5's gains scaled as train.py
            does); None: `hyp` as they are.
        legacy_decode: defaults filled into a decode configuration written
            before decode.json held the layer's config (e.g. v1 darknet's
            `parametrization="linear"`).
        autoanchor: training checks the anchors against the labels first
            (ultralytics' check_anchors; its ratio match is what it measures).
        serving_nms, eval_nms: `NonMaxSuppression` defaults.
    """
    name: str
    loss: type
    decode: type
    small_model: Callable
    strides: tuple = (8, 16, 32)
    anchors: Optional[object] = None
    reference_size: Optional[int] = None
    models: Mapping = dataclasses.field(default_factory=dict)
    head: Optional[Callable] = None
    loss_defaults: Optional[Callable] = None
    legacy_decode: Mapping = dataclasses.field(default_factory=dict)
    autoanchor: bool = False
    serving_nms: Mapping = dataclasses.field(
        default_factory=lambda: dict(SERVING_NMS))
    eval_nms: Mapping = dataclasses.field(
        default_factory=lambda: dict(EVAL_NMS))

    def __post_init__(self):
        # Frozen all the way down: a registered record cannot be edited.
        for field in ("models", "legacy_decode", "serving_nms", "eval_nms"):
            object.__setattr__(self, field, types.MappingProxyType(
                dict(getattr(self, field))))
        object.__setattr__(self, "strides", tuple(self.strides))

    def default_anchors(self, image_size, model=None):
        """Pixel anchors for square `image_size` inputs: the named `model`'s
        (scaled from its input size) or the version's (from
        `reference_size`); None for an anchor-free version."""
        if model is not None:
            spec = self.model_spec(model)
            if spec.anchors is None:
                return None
            return (np.asarray(spec.anchors, np.float64) * image_size
                    / spec.input_shape[0]).tolist()
        if self.anchors is None:
            return None
        return (np.asarray(self.anchors, np.float64) * image_size
                / self.reference_size).tolist()

    def model_spec(self, model):
        if model not in self.models:
            raise ValueError(f"version {self.name!r} has no model {model!r}; "
                             f"its models: {sorted(self.models)}.")
        return self.models[model]

    def head_arguments(self, image_size, model=None, anchors=None):
        """The keyword arguments loss and decode layer share (see module
        docstring), for square `image_size` inputs, the small model or the
        named `model`, and `anchors` (pixels) replacing the defaults."""
        strides = (self.model_spec(model).strides if model is not None
                   else self.strides)
        if anchors is None:
            anchors = self.default_anchors(image_size, model)
        if self.head is not None:
            return self.head(image_size, tuple(strides), anchors, model)
        return {"anchors": anchors, "strides": tuple(strides)}

    def loss_arguments(self, num_classes, image_size, num_levels,
                       hyperparameters=None):
        """The recipe's loss arguments (beyond the head) from
        `hyperparameters` named as the reference training configuration
        names them (default: its defaults)."""
        hyperparameters = dict(hyperparameters or {})
        unknown = set(hyperparameters) - set(self.hyperparameter_names())
        if unknown:
            raise ValueError(
                f"unknown {self.name} loss hyperparameters {sorted(unknown)}; "
                f"known: {list(self.hyperparameter_names())}.")
        if self.loss_defaults is None:
            return hyperparameters
        return dict(self.loss_defaults(num_classes, image_size, num_levels,
                                       **hyperparameters))

    def hyperparameter_names(self):
        """The loss's own hyperparameters: its `__init__` keywords other than
        the head arguments, format, Keras' (name, reduction, dtype), the
        serialized state (v2's `seen`, v5's `balance_state`) and v5's
        `scale_by_batch_size` (an alias of `reduction="sum"`)."""
        skip = {"self", "num_classes", "anchors", "strides",
                "bounding_box_format", "image_shape", "name", "reduction",
                "dtype", "kwargs", "seen", "balance_state",
                "scale_by_batch_size"}
        skip |= set(self.head_arguments(self.reference_size or 640))
        return tuple(p for p in _parameters(self.loss) if p not in skip)


_REGISTRY = {}


def register(version, replace=False):
    """Adds a `Version` to the registry; returns it.

    Raises:
        ValueError: a version of that name is registered (unless `replace`).

    Example:
        >>> register(Version("v8", loss=YoloV8Loss, decode=YoloV8Decode,
        ...                  small_model=small_v8, head=v8_head))
    """
    if not isinstance(version, Version):
        raise TypeError(f"register() takes a `Version`; got "
                        f"{type(version).__name__}.")
    if version.name in _REGISTRY and not replace:
        raise ValueError(f"version {version.name!r} is already registered; "
                         "pass replace=True to redefine it.")
    clashes = {m for v in _REGISTRY.values() if v.name != version.name
               for m in v.models} & set(version.models)
    if clashes:
        raise ValueError(f"model names {sorted(clashes)} of version "
                         f"{version.name!r} belong to another version.")
    _REGISTRY[version.name] = version
    return version


def unregister(name):
    """Removes a registered version (e.g. one a test registered); returns it."""
    return _REGISTRY.pop(get(name).name)


def get(name):
    """The `Version` registered as `name`.

    Raises:
        ValueError: naming the registered versions, for an unknown `name`.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown YOLO version {name!r}; registered: "
                         f"{', '.join(names())}.") from None


def names():
    """Registered version names in registration order, e.g. `('v1', ...)`."""
    return tuple(_REGISTRY)


def model_names():
    """Every `models.build` name of every version, in registration order."""
    return [m for v in _REGISTRY.values() for m in v.models]


def of_model(model):
    """`(Version, ModelSpec)` of a `models.build` name."""
    for version in _REGISTRY.values():
        if model in version.models:
            return version, version.models[model]
    raise ValueError(f"name must be one of {model_names()}, got {model!r}")


def of_layer(layer):
    """The `Version` whose decode layer class `layer` is (or None)."""
    for version in _REGISTRY.values():
        if type(layer) is version.decode:
            return version
    return None


def _parameters(cls):
    return tuple(inspect.signature(cls.__init__).parameters)


def make_decode_layer(version, num_classes, head, image_size,
                      bounding_box_format="rel_center_xywh", name=None):
    """A version's decode layer from the head arguments (as the loss gets
    them) for square `image_size` inputs."""
    spec = get(version)
    accepted = _parameters(spec.decode)
    kwargs = dict(head, bounding_box_format=bounding_box_format)
    if "num_classes" in accepted:
        kwargs["num_classes"] = num_classes
    if "image_shape" in accepted:
        kwargs["image_shape"] = (image_size, image_size)
    if name is not None:
        kwargs["name"] = name
    return spec.decode(**kwargs)


def decode_config(layer, version=None, input_shape=None, num_classes=None):
    """The decode configuration of a decode layer (the `decode.json` written
    beside a model): `{"version", "layer", "input_shape", "num_classes",
    **layer.get_config()}`, JSON-serialisable.

    Args:
        layer: a registered version's decode layer.
        version: its version name; default the one registered with its class.
        input_shape: the network's `(H, W, 3)`.
        num_classes: C; default the layer's own `num_classes`.
    """
    if version is None:
        found = of_layer(layer)
        if found is None:
            raise ValueError(f"{type(layer).__name__} is no registered "
                             f"version's decode layer ({', '.join(names())}).")
        version = found.name
    config = _plain(layer.get_config())
    if num_classes is None:
        num_classes = config.get("num_classes")
    elif config.get("num_classes") not in (None, num_classes):
        raise ValueError(f"num_classes={num_classes} but the layer decodes "
                         f"{config['num_classes']} classes.")
    return {"version": version, "layer": type(layer).__name__,
            "input_shape": None if input_shape is None else list(input_shape),
            **config,
            "num_classes": None if num_classes is None else int(num_classes)}


def decode_layer(config, bounding_box_format=None, name=None):
    """The decode layer of a decode configuration (`decode_config`'s, or
    the older recipe / importer dicts: `{"version", "anchors", "strides",
    ...}`), with its boxes in `bounding_box_format` (default: the saved
    one)."""
    if not isinstance(config, Mapping) or "version" not in config:
        raise ValueError("a decode configuration is a dict with a "
                         "'version' key (see keras_yolo.versions); got "
                         f"{config!r:.200}")
    spec = get(config["version"])
    accepted = set(_parameters(spec.decode)) - {"self", "kwargs", "name"}
    if "layer" in config:
        if config["layer"] != spec.decode.__name__:
            raise ValueError(
                f"decode configuration of {config['layer']}, but version "
                f"{spec.name!r} decodes with {spec.decode.__name__}.")
        kwargs = {k: v for k, v in config.items()
                  if k in accepted | set(_BASE_LAYER_KEYS)}
    else:
        kwargs = _legacy_arguments(spec, config, accepted)
    if bounding_box_format is not None:
        kwargs["bounding_box_format"] = bounding_box_format
    if name is not None:
        kwargs["name"] = name
    return spec.decode.from_config(kwargs)


def _legacy_arguments(spec, config, accepted):
    """Arguments from a decode configuration of the older form: the head's
    values (strides as ints; a darknet [yolo] cfg's anchors are already its
    level's, so its `masks` are not applied again)."""
    kwargs = dict(spec.legacy_decode)
    kwargs.update({k: v for k, v in config.items()
                   if k in accepted and k != "masks" and v is not None})
    if "strides" in kwargs:
        kwargs["strides"] = [int(round(s)) for s in kwargs["strides"]]
    if "image_shape" in accepted and "input_shape" in config:
        kwargs.setdefault("image_shape", tuple(config["input_shape"][:2]))
    for key in ("sqrt", "softmax"):  # None meant "the parametrization's"
        if key in accepted and key in config:
            kwargs[key] = config[key]
    return kwargs


def _plain(value):
    """Tuples and numpy values to JSON's lists and numbers."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------- built-ins

def _register_builtins():
    import functools

    from keras_yolo import anchors as published
    from keras_yolo import layers, losses
    from keras_yolo.models.builders import (YOLOV3_TINY_ANCHORS,
                                            YOLOV4_TINY_ANCHORS)
    from keras_yolo.models.small_v1 import small_v1
    from keras_yolo.models.small_v2 import small_v2
    from keras_yolo.models.small_v3 import small_v3
    from keras_yolo.models.small_v4 import small_v4
    from keras_yolo.models.small_v5 import small_v5
    from keras_yolo.models.yolov1 import yolov1
    from keras_yolo.models.yolov2 import yolov2, yolov2_tiny
    from keras_yolo.models.yolov3 import yolov3, yolov3_tiny
    from keras_yolo.models.yolov4 import yolov4, yolov4_tiny
    from keras_yolo.models.yolov5 import YOLOV5_MULTIPLES, yolov5
    from keras_yolo.layers.yolo_v8_decode import YoloV8Decode
    from keras_yolo.losses.yolo_v8 import YoloV8Loss
    from keras_yolo.models.yolov8 import REG_MAX, YOLOV8_SCALES, small_v8, yolov8

    def v1_head(image_size, strides, anchors, model):
        if anchors is not None:
            raise ValueError("YOLOv1 has no anchors.")
        # The small model's grid follows the input; yolov1's dense head is 7.
        grid = image_size // strides[-1] if model is None else 7
        return {"grid_size": grid, "boxes_per_cell": 2,
                "parametrization": "logistic"}

    def v5_gains(num_classes, image_size, num_levels, box=0.05, obj=1.0,
                 cls=0.5, **others):
        # hyp.scratch-low's gains, scaled as train.py scales them.
        return {**others, **losses.scale_hyperparameters(
            box=box, obj=obj, cls=cls, num_levels=num_levels,
            num_classes=num_classes, image_size=image_size)}

    register(Version(
        "v1", losses.YoloV1Loss, layers.YoloV1Decode,
        small_model=lambda num_classes, image_size: small_v1(
            num_classes, grid_size=image_size // 32, input_size=image_size),
        strides=(32,), head=v1_head,
        models={"yolov1": ModelSpec(functools.partial(yolov1,
                                                      tiny=False),
                                    (448, 448, 3), (64,)),
                "yolov1-tiny": ModelSpec(functools.partial(yolov1,
                                                           tiny=True),
                                         (448, 448, 3), (64,))},
        # darknet's [detection] decoding (its cfg's sqrt / softmax flags).
        legacy_decode={"parametrization": "linear"}))
    register(Version(
        "v2", losses.YoloV2Loss, layers.YoloV2Decode,
        small_model=lambda num_classes, image_size: small_v2(
            num_classes, input_size=image_size),
        strides=(32,), anchors=published.YOLOV2_VOC_ANCHORS,
        reference_size=416,
        models={"yolov2": ModelSpec(yolov2, (416, 416, 3), (32,),
                                    published.YOLOV2_COCO_ANCHORS),
                "yolov2-tiny": ModelSpec(yolov2_tiny, (416, 416, 3),
                                         (32,),
                                         published.YOLOV2_COCO_ANCHORS)}))
    register(Version(
        "v3", losses.YoloV3Loss, layers.YoloV3Decode,
        small_model=lambda num_classes, image_size: small_v3(
            num_classes, input_size=image_size),
        anchors=published.YOLOV3_ANCHORS, reference_size=416,
        models={"yolov3": ModelSpec(yolov3, (416, 416, 3),
                                    (8, 16, 32), published.YOLOV3_ANCHORS),
                "yolov3-spp": ModelSpec(functools.partial(yolov3,
                                                          spp=True),
                                        (608, 608, 3), (8, 16, 32),
                                        published.YOLOV3_ANCHORS),
                "yolov3-tiny": ModelSpec(yolov3_tiny, (416, 416, 3),
                                         (16, 32), YOLOV3_TINY_ANCHORS)}))
    register(Version(
        "v4", losses.YoloV4Loss, layers.YoloV4Decode,
        small_model=lambda num_classes, image_size: small_v4(
            num_classes, input_shape=(image_size, image_size, 3)),
        anchors=published.YOLOV4_ANCHORS, reference_size=608,
        models={"yolov4": ModelSpec(yolov4, (608, 608, 3),
                                    (8, 16, 32), published.YOLOV4_ANCHORS),
                "yolov4-tiny": ModelSpec(yolov4_tiny, (416, 416, 3),
                                         (16, 32), YOLOV4_TINY_ANCHORS)}))
    # yolov5 trains its (YOLOv3's) anchors at 640, but at 640 they are small
    # for objects spanning 3% to 60% of the image; the shapes benchmarks
    # scale v3's and v5's from darknet's 416, as here.
    register(Version(
        "v5", losses.YoloV5Loss, layers.YoloV5Decode,
        small_model=lambda num_classes, image_size: small_v5(
            num_classes, input_size=image_size),
        anchors=published.YOLOV5_ANCHORS, reference_size=416,
        models={f"yolov5{size}": ModelSpec(
            functools.partial(yolov5, depth_multiple=depth,
                              width_multiple=width),
            (640, 640, 3), (8, 16, 32), published.YOLOV5_ANCHORS)
            for size, (depth, width) in YOLOV5_MULTIPLES.items()},
        loss_defaults=v5_gains, autoanchor=True))
    # Anchor-free: the head's strides and DFL bins; the loss's own defaults
    # are ultralytics 8's gains. NMS: ultralytics 8 predict / val (IoU 0.7).
    register(Version(
        "v8", YoloV8Loss, YoloV8Decode,
        small_model=lambda num_classes, image_size: small_v8(
            num_classes, input_size=image_size),
        head=lambda image_size, strides, anchors, model: {
            "strides": tuple(strides), "reg_max": REG_MAX},
        models={f"yolov8{size}": ModelSpec(
            functools.partial(yolov8, depth_multiple=depth,
                              width_multiple=width, max_channels=channels),
            (640, 640, 3), (8, 16, 32))
            for size, (depth, width, channels) in YOLOV8_SCALES.items()},
        serving_nms={"conf_thres": 0.25, "iou_thres": 0.7, "max_det": 300},
        eval_nms={"conf_thres": 0.001, "iou_thres": 0.7, "max_det": 300}))


_register_builtins()
