"""ultralytics yolov5 (v6.0+) checkpoints to `keras_yolo.models.build("yolov5{n,s,m,l,x}")`.

`load_yolov5(checkpoint)` reads a state dict (a `.pt` checkpoint, a `.pt`
state dict, a `.npz` written by `export_yolov5_npz`, or a dict of arrays),
recognises the size from its shapes (stem channels = ceil(64 w / 8) * 8,
bottlenecks in `model.2` = max(round(3 d), 1)), the classes from the head,
and the anchors from `model.24.anchors` (ultralytics keeps them in grid cells
of each level, after autoanchor; here they become input pixels), builds the
Keras model and copies every tensor:

    model.{i}[.m.{j}].cv1.conv.weight (O, I, kh, kw) -> `m{i}[_m{j}]_cv1` kernel (kh, kw, I, O)
    ....bn.weight, bias, running_mean, running_var -> gamma, beta, moving_mean, moving_variance
    model.24.m.{l}.weight, .bias                   -> `m24_m{l}_conv` kernel, bias

Only `torch` is needed for `.pt` files (plus the `yolov5` package when the
checkpoint pickles the model object); `.npz` needs numpy only. A `.pt` file is
a pickle: reading one runs code from it, so read only checkpoints you trust
(or convert them to `.npz` once, where you trust them).

Example:
    >>> model = load_yolov5("yolov5s.pt")           # or "yolov5s.npz"
    >>> p3, p4, p5 = model(images)                   # (B, 80, 80, 3, 85), ... at 640
    >>> decode = make_yolov5_decoder(model.decode_config, "xyxy")
"""

import os
import sys

import numpy as np

from keras_yolo.weights import torch_state

# ultralytics DetectionModel: P3/8, P4/16, P5/32.
STRIDES = (8, 16, 32)
HEAD_INDEX = 24


def _to_numpy(value):
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)


def _import_torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError("reading a .pt checkpoint needs torch; export it to .npz where torch "
                          "is installed (keras_yolo.weights.export_yolov5_npz)") from error
    return torch


def _alias_yolov5_modules():
    """Repository checkpoints pickle `models.yolo.DetectionModel`; map `models` and
    `utils` to the pip `yolov5` package's."""
    import importlib

    package = importlib.import_module("yolov5")
    for name in ("models", "utils"):
        module = importlib.import_module(f"yolov5.{name}")
        sys.modules.setdefault(name, module)
    for name in ("models.yolo", "models.common", "models.experimental", "utils.general"):
        sys.modules.setdefault(name, importlib.import_module(f"yolov5.{name}"))
    return package


def _load_pt(path):
    torch = _import_torch()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as error:
        if error.name not in ("models", "utils", "yolov5"):
            raise
        try:
            _alias_yolov5_modules()
        except ImportError as import_error:
            raise ImportError(f"checkpoint={path!r} pickles the yolov5 model object; install "
                              "the `yolov5` package to read it") from import_error
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint


def state_dict_of(checkpoint):
    """The float32 numpy state dict of a checkpoint path, checkpoint dict or model.

    Accepts: a `.pt` path (ultralytics checkpoint `{"model": ..., "ema": ...}`
    or a plain state dict), a `.npz` path, a `torch.nn.Module`, or a mapping of
    names to tensors / arrays. Prefers `ema` over `model` when both exist and
    `ema` is set (ultralytics saves the EMA weights as the model of `best.pt`).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        path = os.fspath(checkpoint)
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint={path!r} does not exist")
        if path.endswith(".npz"):
            with np.load(path) as data:
                return {key: np.asarray(data[key], np.float32) for key in data.files
                        if not key.endswith(torch_state.IGNORED_SUFFIXES)}
        checkpoint = _load_pt(path)
    if isinstance(checkpoint, dict) and ("model" in checkpoint or "ema" in checkpoint):
        module = checkpoint.get("ema") or checkpoint.get("model")
        if module is None:
            raise ValueError("checkpoint has neither a 'model' nor an 'ema' entry with weights")
        checkpoint = module
    if hasattr(checkpoint, "state_dict"):
        checkpoint = checkpoint.state_dict()
    if not hasattr(checkpoint, "items"):
        raise TypeError(f"checkpoint of type {type(checkpoint).__name__} is not a path, "
                        "a checkpoint dict, a module or a state dict")
    return {key: _to_numpy(value) for key, value in checkpoint.items()
            if not key.endswith(torch_state.IGNORED_SUFFIXES)}


def export_yolov5_npz(checkpoint, npz_path):
    """Writes a checkpoint's float32 state dict to `.npz` (load it without torch)."""
    state = state_dict_of(checkpoint)
    np.savez(npz_path, **state)
    return npz_path


def _size_of(state):
    from keras_yolo.models.yolov5 import YOLOV5_MULTIPLES, channels, repeats

    try:
        stem = state["model.0.conv.weight"].shape[0]
    except KeyError:
        raise ValueError("not a yolov5 v6.0+ state dict: no model.0.conv.weight") from None
    blocks = len({key.split(".")[3] for key in state if key.startswith("model.2.m.")})
    for size, (depth, width) in YOLOV5_MULTIPLES.items():
        if channels(64, width) == stem and repeats(3, depth) == blocks:
            return size
    raise ValueError(f"no yolov5 size has a stem of {stem} channels and {blocks} bottlenecks "
                     f"in model.2 (sizes: {sorted(YOLOV5_MULTIPLES)})")


def decode_config_of(state, input_shape=(640, 640, 3)):
    """Anchors (input pixels, ascending stride), strides and classes of a yolov5 state dict."""
    if f"model.{HEAD_INDEX}.anchors" not in state:
        raise ValueError(f"no Detect head at model.{HEAD_INDEX}: only the P3-P5 yolov5 n/s/m/l/x "
                         "v6.0+ detection models are supported (not P6 *6 models)")
    head = state[f"model.{HEAD_INDEX}.m.0.weight"]
    anchors_cells = state[f"model.{HEAD_INDEX}.anchors"]
    num_anchors = anchors_cells.shape[1]
    if head.shape[0] % num_anchors:
        raise ValueError(f"head has {head.shape[0]} channels, not a multiple of {num_anchors} anchors")
    anchors = anchors_cells * np.asarray(STRIDES, np.float32)[:, None, None]
    return {"version": "v5", "num_classes": head.shape[0] // num_anchors - 5,
            "anchors": anchors.tolist(), "strides": list(STRIDES),
            "input_shape": list(input_shape)}


def load_yolov5(checkpoint, input_shape=(640, 640, 3)):
    """Builds the matching `yolov5{n,s,m,l,x}` Keras model and loads a checkpoint into it.

    Args:
        checkpoint: `.pt` (ultralytics checkpoint or state dict), `.npz`
            (`export_yolov5_npz`), a torch module or a state dict.
        input_shape: `(H, W, 3)`, multiples of 32, or `(None, None, 3)`.

    Returns:
        `YoloModel` with outputs `[(B, H/8, W/8, 3, 5+C), (B, H/16, ...), (B, H/32, ...)]`
        (ultralytics Detect's `x` before the sigmoid, as `(B, ny, nx, na, no)`),
        and `model.decode_config`: `{"version": "v5", "num_classes", "anchors"
        (pixels), "strides", "input_shape", "size"}`.

    Example:
        >>> model = load_yolov5("yolov5n.npz", input_shape=(320, 320, 3))
        >>> decode = make_yolov5_decoder(model.decode_config, "xyxy")
    """
    from keras_yolo.models import build

    state = state_dict_of(checkpoint)
    size = _size_of(state)
    config = decode_config_of(state, input_shape)
    model = build(f"yolov5{size}", num_classes=config["num_classes"], input_shape=tuple(input_shape))
    load_yolov5_weights(model, state)
    config["size"] = size
    model.decode_config = config
    return model


def load_yolov5_weights(model, checkpoint):
    """Copies a yolov5 checkpoint into a model built by `keras_yolo.models.build("yolov5?")`.

    All shapes are checked before anything is assigned: on a mismatch the
    model is left as it was and the error names the checkpoint tensor.
    Returns the model.
    """
    state = checkpoint if torch_state.is_state_dict(checkpoint) else state_dict_of(checkpoint)
    return torch_state.copy_state(
        model, state, f"m{HEAD_INDEX}_",
        head_torch_name=lambda name: torch_state.torch_prefix(name[: -len("_conv")]),
        known={f"model.{HEAD_INDEX}.anchors"})


def make_yolov5_decoder(decode_config, bounding_box_format="center_xywh", name=None):
    """`YoloV5Decode` with the checkpoint's anchors (ultralytics Detect's inference decoding)."""
    from keras_yolo import versions

    return versions.decode_layer(decode_config, bounding_box_format, name=name)
