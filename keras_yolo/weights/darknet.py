"""darknet `.cfg` + `.weights` to a keras-yolo model with the same outputs.

`load_darknet(cfg_path, weights_path)` parses the cfg, builds the Keras graph
layer by layer (NHWC; darknet is NCHW, so every layer that depends on memory
order, [connected], [reorg], [detection], reproduces darknet's order), reads the
weights file in darknet's order, and returns a `keras_yolo.models.YoloModel`
whose outputs are the raw head outputs of keras-yolo's contract:

- [detection] (YOLOv1): `(B, S, S, Bx*5 + C)`, per cell `[x, y, w, h, o]` per
  box then the C class scores.
- [region] (YOLOv2) and [yolo] (YOLOv3/v4): `(B, H, W, A, 5 + C)` per level,
  darknet's per-anchor channel blocks `[A*(5+C)]` split out; [yolo] levels are
  returned in ascending stride (darknet lists them in cfg order).
- [yolo] with new_coords=1 (Scaled-YOLOv4 cfgs): the logistic that darknet
  applies in the [convolutional] before the layer is left out of the model, so
  the output is raw too; its decoding is YOLOv5's (version "v5").

These are the inputs of darknet's head layers, before the activations those
layers apply. `model.decode_config` (and `darknet_decode_config(cfg_path)`)
hold what the head's decoding needs: version, anchors in input pixels, strides,
classes, `scale_x_y`, and for v1/v2 darknet's `sqrt` / `softmax` flags.

Weights file layout: int32 major, minor, revision; `seen` as int64 when
`major * 10 + minor >= 2` (and both < 1000), else int32; then for each layer
with weights, in cfg order, float32:
  [convolutional]: biases[n], (scales[n], rolling_mean[n], rolling_variance[n]
                   when batch_normalize), weights[n][c/groups][size][size] (OIHW)
  [connected]:     biases[out], weights[out][in] (stored [in][out] when major
                   or minor > 1000), (scales, rolling_mean, rolling_variance)
  [local]:         biases[n][oh][ow], weights[oh*ow][n][c][size][size]

Batch normalization at inference: pjreddie darknet computes
(x - mean) / (sqrt(var) + 1e-6) (CPU and GPU), AlexeyAB darknet's CUDA/cuDNN
path (x - mean) / sqrt(var + 1e-5) (its CPU path keeps pjreddie's formula; the
two differ noticeably only for channels with rolling variance below ~1e-3).
Keras computes (x - mean) / sqrt(var' + eps); the loader sets eps and var' so
both are reproduced exactly (`flavor`).

Not supported (a clear NotImplementedError names the layer and option):
[softmax], [cost], [crop], [batchnorm], [deconvolutional], recurrent layers,
[sam], [scale_channels], [reorg3d], [gaussian_yolo]; binary/xnor, dilated,
deformable or antialiased convolutions; stride_x != stride_y; maxpool_depth;
weighted or multi-source [shortcut] and shortcuts between different shapes;
reverse / flatten / extra [reorg]; downsampling [upsample] (stride < 0);
[region] softmax trees (yolo9000); [yolo] new_coords=1 with scale_x_y != 2;
cfgs mixing head kinds. Input sizes are static (re-convert for another size).

Example:
    >>> model = load_darknet("yolov3.cfg", "yolov3.weights")
    >>> p3, p4, p5 = model(images)      # images (B, 416, 416, 3) RGB in [0, 1]
    >>> model.decode_config["anchors"]  # (3, 3, 2) pixels, ascending stride
"""

import os
import re
import warnings

import keras
import numpy as np

from keras_yolo.models.yolo_model import YoloModel
from keras_yolo.weights.darknet_layers import (
    DarknetActivation,
    DarknetChannelGroup,
    DarknetDetectionLayout,
    DarknetFlatten,
    DarknetLocal,
    DarknetMaxPool2D,
    DarknetReorg,
)

FLAVORS = ("auto", "pjreddie", "alexeyab")
# pjreddie normalize_cpu: (x - mean) / (sqrt(var) + 1e-6).
PJREDDIE_SQRT_OFFSET = 1e-6
# Keras eps for pjreddie: tiny, so var' = (sqrt(var) + 1e-6)^2 - eps >= 0.
PJREDDIE_KERAS_EPSILON = 1e-12
# AlexeyAB normalize_cpu / cuDNN: (x - mean) / sqrt(var + 1e-5).
ALEXEYAB_EPSILON = 1e-5
# darknet's rolling statistics: rolling = .99 rolling + .01 batch.
DARKNET_BN_MOMENTUM = 0.99
# darknet's parser (string_to_layer_type) accepts these short section names.
_ALIASES = {"conv": "convolutional", "max": "maxpool", "avg": "avgpool", "conn": "connected"}
# [yolo] new_coords=1 with this scale_x_y decodes as YOLOv5 does:
# x = (2 sigmoid(t) - 0.5 + c) s, w = (2 sigmoid(t))^2 anchor.
NEW_COORDS_SCALE_X_Y = 2.0
# Options and values only AlexeyAB darknet understands.
_ALEXEYAB_ACTIVATIONS = {"mish", "swish"}
_ALEXEYAB_OPTIONS = {"scale_x_y", "groups", "group_id", "iou_loss", "new_coords",
                     "beta_nms", "nms_kind", "iou_normalizer", "max_delta"}


# ----------------------------------------------------------------------------- cfg

def parse_cfg(cfg_path):
    """Reads a darknet cfg into a list of sections.

    Returns:
        `[{"type": "net", "width": "416", ...}, {"type": "convolutional", ...}]`,
        values as strings, comments (`#`, `;`) and blank lines dropped, short
        section names (`[conv]`, `[max]`, ...) spelled out.
    """
    sections = []
    with open(cfg_path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.split("#")[0].split(";")[0].strip()
            if not line:
                continue
            if line.startswith("["):
                if not line.endswith("]"):
                    raise ValueError(f"{cfg_path}:{number}: bad section header {raw!r}")
                kind = line[1:-1].strip().lower()
                sections.append({"type": _ALIASES.get(kind, kind)})
            elif "=" in line:
                if not sections:
                    raise ValueError(f"{cfg_path}:{number}: option before any section")
                key, value = line.split("=", 1)
                sections[-1][key.strip()] = value.strip()
            else:
                raise ValueError(f"{cfg_path}:{number}: cannot parse {raw!r}")
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise ValueError(f"{cfg_path}: the first section must be [net], "
                         f"got {sections[0]['type'] if sections else 'nothing'}")
    return sections


def _int(section, key, default=None):
    if key not in section:
        if default is None:
            raise ValueError(f"[{section['type']}] needs {key}=")
        return default
    return int(section[key])


def _float(section, key, default):
    return float(section[key]) if key in section else default


def _ints(section, key):
    return [int(v) for v in section[key].split(",") if v.strip()] if key in section else []


def _floats(section, key):
    return [float(v) for v in section[key].split(",") if v.strip()] if key in section else []


def _detect_flavor(sections):
    for section in sections[1:]:
        if section.get("activation") in _ALEXEYAB_ACTIVATIONS:
            return "alexeyab"
        if section["type"] != "convolutional" and _ALEXEYAB_OPTIONS & set(section):
            return "alexeyab"
    return "pjreddie"


def _reject(section, index, options):
    """Raises on options this loader does not reproduce (they change the output)."""
    for key, allowed in options.items():
        if key in section and section[key] not in allowed:
            raise NotImplementedError(
                f"layer {index} [{section['type']}]: {key}={section[key]} is not supported")


# ------------------------------------------------------------------------- weights

class _WeightsReader:
    """Reads darknet's weights file: header, then float32 blocks in order."""

    def __init__(self, weights_path):
        data = np.fromfile(weights_path, dtype=np.uint8)
        if data.size < 16:
            raise ValueError(f"weights_path={weights_path!r}: {data.size} bytes, "
                             "too short for a darknet header")
        major, minor, revision = np.frombuffer(data[:12].tobytes(), "<i4")
        wide_seen = (major * 10 + minor) >= 2 and major < 1000 and minor < 1000
        seen_bytes = 8 if wide_seen else 4
        self.header = {"major": int(major), "minor": int(minor), "revision": int(revision),
                       "seen": int(np.frombuffer(data[12:12 + seen_bytes].tobytes(),
                                                 "<i8" if wide_seen else "<i4")[0])}
        self.transpose = major > 1000 or minor > 1000
        body = data[12 + seen_bytes:]
        if body.size % 4:
            raise ValueError(f"weights_path={weights_path!r}: body of {body.size} bytes "
                             "is not whole float32 values")
        self.values = np.frombuffer(body.tobytes(), "<f4")
        self.path = weights_path
        self.offset = 0

    def read(self, count, what):
        end = self.offset + count
        if end > self.values.size:
            raise ValueError(
                f"weights_path={self.path!r} ends after {self.values.size} floats; "
                f"{what} needs floats {self.offset}..{end}: the cfg has more weights "
                "than the file")
        block = self.values[self.offset:end]
        self.offset = end
        return block.astype(np.float32)

    def finish(self):
        left = self.values.size - self.offset
        if left:
            raise ValueError(f"weights_path={self.path!r} has {left} floats left after "
                             "the last layer: the cfg does not match the file")


def _batch_norm_weights(scales, mean, variance, biases, flavor):
    if flavor == "pjreddie":
        std = np.sqrt(variance.astype(np.float64)) + PJREDDIE_SQRT_OFFSET
        variance = std ** 2 - PJREDDIE_KERAS_EPSILON
    return [scales, biases, mean, variance.astype(np.float32)]


# --------------------------------------------------------------------------- build

class _Builder:
    """Builds the Keras graph section by section, tracking darknet indices."""

    def __init__(self, sections, input_shape, flavor):
        self.sections = sections
        self.flavor = flavor
        self.net = sections[0]
        if input_shape is None:
            input_shape = (_int(self.net, "height", 416), _int(self.net, "width", 416),
                           _int(self.net, "channels", 3))
        if len(input_shape) != 3 or not all(isinstance(v, (int, np.integer)) and v > 0
                                            for v in input_shape):
            raise ValueError(f"input_shape must be 3 positive ints (height, width, channels); "
                             f"darknet networks have static shapes, got {input_shape!r}")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.inputs = keras.Input(shape=self.input_shape, name="images")
        self.outputs = []       # darknet layer index -> Keras tensor
        self.weighted = []      # (index, section, {"kind": ..., layers...}) in cfg order
        self.heads = []         # (index, section, raw tensor, decode info)
        self.preactivations = {}  # conv index -> (tensor before activation, activation name)

    def build(self):
        for index, section in enumerate(self.sections[1:]):
            method = getattr(self, "_" + section["type"], None)
            if method is None:
                raise NotImplementedError(
                    f"layer {index}: darknet layer type [{section['type']}] is not supported")
            x = self.outputs[-1] if self.outputs else self.inputs
            self.outputs.append(method(index, section, x))
        if not self.heads:
            raise ValueError("the cfg has no [detection], [region] or [yolo] layer")
        return self

    # -- helpers
    def _layer_input(self, index, offset):
        source = offset if offset >= 0 else index + offset
        if not 0 <= source < index:
            raise ValueError(f"layer {index}: reference {offset} points outside 0..{index - 1}")
        return self.outputs[source]

    def _activation(self, index, section, x, default="linear"):
        name = section.get("activation", default)
        if name == "linear":
            return x
        return DarknetActivation(name, name=f"{name}_{index}")(x)

    # -- layers
    def _convolutional(self, index, section, x):
        _reject(section, index, {"binary": {"0"}, "xnor": {"0"}, "flipped": {"0"},
                                 "dilation": {"1"}, "stride_x": {section.get("stride", "1")},
                                 "stride_y": {section.get("stride", "1")},
                                 "antialiasing": {"0"}, "deform": {"0"}})
        filters = _int(section, "filters", 1)
        size = _int(section, "size", 1)
        stride = _int(section, "stride", 1)
        groups = _int(section, "groups", 1)
        pad = _int(section, "padding", 0)
        if _int(section, "pad", 0):
            pad = size // 2
        batch_norm = bool(_int(section, "batch_normalize", 0))
        channels = x.shape[-1]
        if channels % groups or filters % groups:
            raise ValueError(f"layer {index}: groups={groups} does not divide "
                             f"{channels} inputs / {filters} filters")
        if pad:
            x = keras.layers.ZeroPadding2D(pad, name=f"pad_{index}")(x)
        conv = keras.layers.Conv2D(filters, size, strides=stride, padding="valid",
                                   groups=groups, use_bias=not batch_norm,
                                   name=f"conv_{index}")
        x = conv(x)
        layers = {"kind": "conv", "conv": conv, "filters": filters, "size": size,
                  "channels": channels // groups}
        if batch_norm:
            epsilon = (PJREDDIE_KERAS_EPSILON if self.flavor == "pjreddie"
                       else ALEXEYAB_EPSILON)
            bn = keras.layers.BatchNormalization(epsilon=epsilon,
                                                 momentum=DARKNET_BN_MOMENTUM,
                                                 name=f"bn_{index}")
            x = bn(x)
            layers["bn"] = bn
        self.weighted.append((index, section, layers))
        # darknet's default activation is logistic for [convolutional].
        self.preactivations[index] = (x, section.get("activation", "logistic"))
        return self._activation(index, section, x, default="logistic")

    def _connected(self, index, section, x):
        outputs = _int(section, "output", 1)
        batch_norm = bool(_int(section, "batch_normalize", 0))
        x = DarknetFlatten(name=f"flatten_{index}")(x)
        inputs = x.shape[-1]
        dense = keras.layers.Dense(outputs, use_bias=not batch_norm, name=f"connected_{index}")
        x = dense(x)
        layers = {"kind": "connected", "dense": dense, "inputs": inputs, "outputs": outputs}
        if batch_norm:
            epsilon = (PJREDDIE_KERAS_EPSILON if self.flavor == "pjreddie"
                       else ALEXEYAB_EPSILON)
            bn = keras.layers.BatchNormalization(epsilon=epsilon,
                                                 momentum=DARKNET_BN_MOMENTUM,
                                                 name=f"bn_{index}")
            x = bn(x)
            layers["bn"] = bn
        self.weighted.append((index, section, layers))
        return self._activation(index, section, x, default="logistic")

    def _local(self, index, section, x):
        filters = _int(section, "filters", 1)
        size = _int(section, "size", 1)
        stride = _int(section, "stride", 1)
        pad = _int(section, "pad", 0)
        height = x.shape[1]
        # darknet: out = (h - (pad ? 1 : size)) / stride + 1, patches padded by `pad`.
        darknet_out = (height - (1 if pad else size)) // stride + 1
        if darknet_out != (height + 2 * pad - size) // stride + 1:
            raise NotImplementedError(f"layer {index} [local]: pad={pad} with size={size} "
                                      "reads outside darknet's patch buffer")
        local = DarknetLocal(filters, size, stride, pad, name=f"local_{index}")
        x = local(x)
        self.weighted.append((index, section, {"kind": "local", "local": local,
                                               "filters": filters, "size": size}))
        return self._activation(index, section, x, default="logistic")

    def _maxpool(self, index, section, x):
        _reject(section, index, {"maxpool_depth": {"0"}, "antialiasing": {"0"},
                                 "stride_x": {section.get("stride", "1")},
                                 "stride_y": {section.get("stride", "1")}})
        stride = _int(section, "stride", 1)
        size = _int(section, "size", stride)
        padding = _int(section, "padding", size - 1)
        return DarknetMaxPool2D(size, stride, padding, name=f"maxpool_{index}")(x)

    def _avgpool(self, index, section, x):
        return keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"avgpool_{index}")(x)

    def _dropout(self, index, section, x):
        return keras.layers.Dropout(_float(section, "probability", 0.5),
                                    name=f"dropout_{index}")(x)

    def _route(self, index, section, x):
        sources = [self._layer_input(index, offset) for offset in _ints(section, "layers")]
        if not sources:
            raise ValueError(f"layer {index} [route]: needs layers=")
        groups = _int(section, "groups", 1)
        group_id = _int(section, "group_id", 0)
        if groups != 1:
            for source in sources:
                if source.shape[-1] % groups:
                    raise ValueError(f"layer {index} [route]: groups={groups} does not "
                                     f"divide {source.shape[-1]} channels")
            sources = [DarknetChannelGroup(groups, group_id, name=f"route_{index}_group_{i}")(s)
                       for i, s in enumerate(sources)]
        if len({tuple(s.shape[1:3]) for s in sources}) != 1:
            raise ValueError(f"layer {index} [route]: inputs of different sizes "
                             f"{[tuple(s.shape[1:3]) for s in sources]}")
        if len(sources) == 1:
            return keras.layers.Identity(name=f"route_{index}")(sources[0])
        return keras.layers.Concatenate(axis=-1, name=f"route_{index}")(sources)

    def _shortcut(self, index, section, x):
        _reject(section, index, {"weights_type": {"none"},
                                 "weights_normalization": {"none"}})
        offsets = _ints(section, "from")
        if len(offsets) != 1:
            raise NotImplementedError(f"layer {index} [shortcut]: from={section.get('from')} "
                                      "(exactly one source is supported)")
        other = self._layer_input(index, offsets[0])
        if tuple(other.shape[1:]) != tuple(x.shape[1:]):
            raise NotImplementedError(f"layer {index} [shortcut]: shapes {tuple(x.shape[1:])} "
                                      f"and {tuple(other.shape[1:])} differ")
        # pjreddie shortcut_cpu: out = alpha * previous + beta * from.
        alpha = _float(section, "alpha", 1.0)
        beta = _float(section, "beta", 1.0)
        if alpha != 1.0:
            x = keras.layers.Rescaling(alpha, name=f"shortcut_{index}_alpha")(x)
        if beta != 1.0:
            other = keras.layers.Rescaling(beta, name=f"shortcut_{index}_beta")(other)
        x = keras.layers.Add(name=f"shortcut_{index}")([x, other])
        return self._activation(index, section, x, default="linear")

    def _upsample(self, index, section, x):
        stride = _int(section, "stride", 2)
        if stride < 1:
            raise NotImplementedError(f"layer {index} [upsample]: stride={stride} "
                                      "(downsampling) is not supported")
        x = keras.layers.UpSampling2D(stride, interpolation="nearest",
                                      name=f"upsample_{index}")(x)
        scale = _float(section, "scale", 1.0)
        if scale != 1.0:
            x = keras.layers.Rescaling(scale, name=f"upsample_{index}_scale")(x)
        return x

    def _reorg(self, index, section, x):
        _reject(section, index, {"reverse": {"0"}, "flatten": {"0"}, "extra": {"0"}})
        stride = _int(section, "stride", 1)
        if x.shape[1] % stride or x.shape[2] % stride:
            raise ValueError(f"layer {index} [reorg]: stride={stride} does not divide "
                             f"{tuple(x.shape[1:3])}")
        order = "darknet2018" if self.flavor == "pjreddie" else "space_to_depth"
        return DarknetReorg(stride, order, name=f"reorg_{index}")(x)

    # -- heads
    def _detection(self, index, section, x):
        classes = _int(section, "classes", 1)
        coords = _int(section, "coords", 1)
        side = _int(section, "side", 7)
        num = _int(section, "num", 1)
        if coords != 4:
            raise NotImplementedError(f"layer {index} [detection]: coords={coords}")
        expected = side * side * (classes + num * (coords + 1))
        if int(np.prod(x.shape[1:])) != expected:
            raise ValueError(f"layer {index} [detection]: input of {np.prod(x.shape[1:])} "
                             f"values, side={side} num={num} classes={classes} need {expected}")
        if tuple(x.shape[1:3]) != (1, 1):
            x = DarknetFlatten(name=f"flatten_{index}")(x)
        raw = DarknetDetectionLayout(side, num, classes, name=f"detection_{index}")(x)
        self.heads.append((index, section, raw, {
            "grid_size": side, "boxes_per_cell": num, "num_classes": classes,
            "sqrt": bool(_int(section, "sqrt", 0)),
            "softmax": bool(_int(section, "softmax", 0))}))
        return x

    def _head_reshape(self, index, section, x, num_anchors, classes, coords=4):
        if coords != 4:
            raise NotImplementedError(f"layer {index} [{section['type']}]: coords={coords}")
        if x.shape[-1] != num_anchors * (5 + classes):
            raise ValueError(f"layer {index} [{section['type']}]: input has {x.shape[-1]} "
                             f"channels, {num_anchors} anchors x (5 + {classes}) needed")
        return keras.layers.Reshape((x.shape[1], x.shape[2], num_anchors, 5 + classes),
                                    name=f"{section['type']}_{index}")(x)

    def _region(self, index, section, x):
        _reject(section, index, {"tree": {""}, "map": {""}})
        classes = _int(section, "classes", 20)
        num = _int(section, "num", 1)
        cells = np.array(_floats(section, "anchors") or [0.5] * 2 * num).reshape(-1, 2)[:num]
        stride_w = self.input_shape[1] / x.shape[2]
        stride_h = self.input_shape[0] / x.shape[1]
        raw = self._head_reshape(index, section, x, num, classes, _int(section, "coords", 4))
        self.heads.append((index, section, raw, {
            "num_classes": classes,
            "anchors": (cells * [stride_w, stride_h]).tolist(),
            "stride": stride_w,
            "softmax": bool(_int(section, "softmax", 0)),
            "background": bool(_int(section, "background", 0))}))
        return x

    def _yolo(self, index, section, x):
        classes = _int(section, "classes", 20)
        total = _int(section, "num", 1)
        anchors = np.array(_floats(section, "anchors") or [0.5] * 2 * total).reshape(-1, 2)
        mask = _ints(section, "mask") or list(range(total))
        scale_x_y = _float(section, "scale_x_y", 1.0)
        new_coords = bool(_int(section, "new_coords", 0))
        source = x
        if new_coords:
            # AlexeyAB new_coords (Scaled-YOLOv4): the [convolutional] before the
            # layer applies the logistic, the layer only scales x, y. Its raw
            # output is that convolution before its logistic.
            preactivation = self.preactivations.get(index - 1)
            if preactivation is None or preactivation[1] != "logistic":
                raise NotImplementedError(f"layer {index} [yolo] new_coords=1 needs a [convolutional] "
                                          "with activation=logistic right before it")
            if scale_x_y != NEW_COORDS_SCALE_X_Y:
                raise NotImplementedError(f"layer {index} [yolo] new_coords=1 with scale_x_y="
                                          f"{scale_x_y} (only {NEW_COORDS_SCALE_X_Y}, YOLOv5's decoding)")
            source = preactivation[0]
        raw = self._head_reshape(index, section, source, len(mask), classes)
        self.heads.append((index, section, raw, {
            "num_classes": classes,
            "anchors": anchors[mask].tolist(),
            "mask": mask,
            "stride": self.input_shape[1] / x.shape[2],
            "scale_x_y": scale_x_y,
            "new_coords": new_coords}))
        return x


def _decode_config(builder):
    """What the head's decode layer needs, from the cfg's head sections."""
    kinds = {section["type"] for _, section, _, _ in builder.heads}
    if len(kinds) != 1:
        raise NotImplementedError(f"heads of several kinds in one cfg: {sorted(kinds)}")
    kind = kinds.pop()
    infos = [info for _, _, _, info in builder.heads]
    config = {"input_shape": list(builder.input_shape), "flavor": builder.flavor}
    if kind == "detection":
        if len(infos) != 1:
            raise NotImplementedError("several [detection] layers")
        config.update(version="v1", **infos[0])
        return config
    if kind == "region":
        if len(infos) != 1:
            raise NotImplementedError("several [region] layers")
        info = infos[0]
        config.update(version="v2", num_classes=info["num_classes"],
                      anchors=[info["anchors"]], strides=[info["stride"]],
                      softmax=info["softmax"], background=info["background"])
        return config
    order = sorted(range(len(infos)), key=lambda i: infos[i]["stride"])
    infos = [infos[i] for i in order]
    if len({info["num_classes"] for info in infos}) != 1:
        raise ValueError("[yolo] layers with different classes=")
    scale_x_y = [info["scale_x_y"] for info in infos]
    new_coords = {info["new_coords"] for info in infos}
    if len(new_coords) != 1:
        raise NotImplementedError("[yolo] layers with and without new_coords in one cfg")
    if new_coords.pop():
        version = "v5"  # Scaled-YOLOv4: YOLOv5's parametrization and decoding
    else:
        version = "v4" if builder.flavor == "alexeyab" else "v3"
    config.update(
        version=version,
        num_classes=infos[0]["num_classes"],
        anchors=[info["anchors"] for info in infos],
        masks=[info["mask"] for info in infos],
        strides=[info["stride"] for info in infos],
        scale_x_y=scale_x_y,
        darknet_order=order)
    return config


def _set_weights(builder, reader):
    transpose = reader.transpose
    for index, section, layers in builder.weighted:
        what = f"layer {index} [{section['type']}]"
        if layers["kind"] == "conv":
            n, size, c = layers["filters"], layers["size"], layers["channels"]
            biases = reader.read(n, what + " biases")
            if "bn" in layers:
                scales = reader.read(n, what + " scales")
                mean = reader.read(n, what + " rolling_mean")
                variance = reader.read(n, what + " rolling_variance")
            kernel = reader.read(n * c * size * size, what + " weights")
            kernel = kernel.reshape(n, c, size, size).transpose(2, 3, 1, 0)
            if "bn" in layers:
                layers["conv"].set_weights([kernel])
                layers["bn"].set_weights(
                    _batch_norm_weights(scales, mean, variance, biases, builder.flavor))
            else:
                layers["conv"].set_weights([kernel, biases])
        elif layers["kind"] == "connected":
            n, k = layers["outputs"], layers["inputs"]
            biases = reader.read(n, what + " biases")
            weights = reader.read(n * k, what + " weights")
            kernel = weights.reshape(k, n) if transpose else weights.reshape(n, k).T
            if "bn" in layers:
                scales = reader.read(n, what + " scales")
                mean = reader.read(n, what + " rolling_mean")
                variance = reader.read(n, what + " rolling_variance")
                layers["dense"].set_weights([kernel])
                layers["bn"].set_weights(
                    _batch_norm_weights(scales, mean, variance, biases, builder.flavor))
            else:
                layers["dense"].set_weights([kernel, biases])
        else:
            local = layers["local"]
            out_h, out_w, k, n = local.kernel.shape
            size = layers["size"]
            c = k // (size * size)
            biases = reader.read(n * out_h * out_w, what + " biases")
            weights = reader.read(out_h * out_w * n * k, what + " weights")
            # (locations, n, c, dy, dx) -> (oh, ow, dy, dx, c, n)
            kernel = weights.reshape(out_h, out_w, n, c, size, size).transpose(0, 1, 4, 5, 3, 2)
            local.set_weights([kernel.reshape(out_h, out_w, k, n),
                               biases.reshape(n, out_h, out_w).transpose(1, 2, 0)])
    reader.finish()


def load_darknet(cfg_path, weights_path=None, *, input_shape=None, flavor="auto", name=None):
    """Builds the keras-yolo model of a darknet cfg and loads its weights.

    Args:
        cfg_path: darknet `.cfg` (v1 to v4 layer types: convolutional with and
            without batch_normalize and groups, maxpool, avgpool, route (with
            groups / group_id), shortcut, upsample, reorg, connected, local,
            dropout, detection, region, yolo; activations linear, leaky, relu,
            logistic, tanh, elu, swish, mish).
        weights_path: darknet `.weights`; `None` keeps Keras' initializers.
        input_shape: `(height, width, channels)`; default from [net]. Must keep
            [connected] / [detection] layer sizes consistent.
        flavor: `"pjreddie"` (darknet 2018: its batch norm epsilon and [reorg]
            order), `"alexeyab"` (AlexeyAB darknet: sqrt(var + 1e-5), true
            space-to-depth reorg), or `"auto"`: `"alexeyab"` when the cfg uses
            an AlexeyAB-only feature (mish, swish, route groups, scale_x_y,
            ...), else `"pjreddie"`.
        name: model name; default the cfg's file name.

    Returns:
        `YoloModel`: images `(B, H, W, C)` RGB in [0, 1] to the raw head
        output(s) (see the module docstring); `model.decode_config` a dict with
        "version" ("v1".."v4"), "num_classes", "anchors" (pixels, ascending
        stride), "strides", "masks", "scale_x_y", ... and `model.darknet_header`
        the weights file header (major, minor, revision, seen).

    Example:
        >>> model = load_darknet("yolov3-tiny.cfg", "yolov3-tiny.weights")
        >>> p4, p5 = model(images)    # (B, 26, 26, 3, 85), (B, 13, 13, 3, 85)
    """
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
    sections = parse_cfg(cfg_path)
    if flavor == "auto":
        flavor = _detect_flavor(sections)
    builder = _Builder(sections, input_shape, flavor).build()
    decode_config = _decode_config(builder)
    raws = [raw for _, _, raw, _ in builder.heads]
    if "darknet_order" in decode_config:  # [yolo] levels, ascending stride
        outputs = [raws[i] for i in decode_config["darknet_order"]]
    else:
        outputs = raws[0]
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_]", "_", os.path.splitext(os.path.basename(cfg_path))[0])
    model = YoloModel(builder.inputs, outputs, name=name)
    header = None
    if weights_path is not None:
        reader = _WeightsReader(weights_path)
        _set_weights(builder, reader)
        header = reader.header
    elif builder.weighted:
        warnings.warn("load_darknet: weights_path=None, the model keeps random weights")
    model.decode_config = decode_config
    model.darknet_header = header
    return model


def darknet_decode_config(cfg_path, flavor="auto"):
    """The decode configuration of a cfg (see `load_darknet`), without weights."""
    sections = parse_cfg(cfg_path)
    if flavor == "auto":
        flavor = _detect_flavor(sections)
    return _decode_config(_Builder(sections, None, flavor).build())


def make_decoder(decode_config, bounding_box_format="rel_center_xywh", name=None):
    """The keras-yolo decode layer for a converted darknet model's raw outputs
    (`keras_yolo.versions.decode_layer` of `model.decode_config`).

    v1: `YoloV1Decode(parametrization="linear")` with the cfg's `sqrt` and
    `softmax` (darknet's own box semantics); v2: `YoloV2Decode`; v3:
    `YoloV3Decode`; v4: `YoloV4Decode` with the cfg's `scale_x_y`; v5
    ([yolo] new_coords=1, scale_x_y=2): `YoloV5Decode`. Anchors are the cfg's,
    in input pixels.

    Example:
        >>> model = load_darknet("yolov3.cfg", "yolov3.weights")
        >>> decode = make_decoder(model.decode_config, "xyxy")
        >>> decode(model(images))["boxes"]   # (B, N, 4) pixels
    """
    from keras_yolo import versions  # imports the models, which this module's users may not need

    return versions.decode_layer(decode_config, bounding_box_format, name=name)
