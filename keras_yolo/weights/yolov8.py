"""ultralytics 8 YOLOv8 detection checkpoints to `keras_yolo.models.yolov8_size("n" ... "x")`.

`load_yolov8(checkpoint)` reads a state dict (an ultralytics `.pt`
checkpoint, a `.pt` state dict, a `.npz` written by
`keras_yolo.weights.export_yolov5_npz`, which writes any state dict, a torch
module or a dict of arrays), recognises the size from its shapes (stem
channels = ceil(64 w / 8) * 8), the classes and `reg_max` from the head,
builds the Keras model and copies every tensor:

    model.{i}[.m.{j}].cv1.conv.weight (O, I, kh, kw) -> `m{i}[_m{j}]_cv1` kernel (kh, kw, I, O)
    ....bn.weight, bias, running_mean, running_var -> gamma, beta, moving_mean, moving_variance
    model.22.cv{2,3}.{l}.{0,1}.conv / .bn           -> `m22_cv{2,3}_{l}_{0,1}`
    model.22.cv{2,3}.{l}.2.weight, .bias            -> `m22_cv{2,3}_{l}_2` kernel, bias

`model.22.dfl.conv.weight` is DFL's fixed projection 0, 1, ..., reg_max - 1
(no trainable weight; the decode layer computes it): it is checked, not copied.

Reading a `.pt` needs `torch`, and `ultralytics` when the checkpoint pickles
the model object (ultralytics' own checkpoints do). A `.pt` file is a pickle:
reading one runs code from it, so read only checkpoints you trust (or convert
them to `.npz` once, where you trust them).

Example:
    >>> model = load_yolov8("yolov8n.pt", input_shape=(640, 640, 3))   # or a .npz
    >>> p3, p4, p5 = model(images)      # (B, 80, 80, 64 + C), (B, 40, 40, 64 + C), (B, 20, 20, 64 + C)
    >>> model.decode_config
    {'version': 'v8', 'num_classes': 80, 'reg_max': 16, 'strides': [8, 16, 32], ...}
"""

import numpy as np

from keras_yolo.weights import torch_state
from keras_yolo.weights.yolov5 import state_dict_of

HEAD = "model.22"
_DFL_KEY = f"{HEAD}.dfl.conv.weight"


def yolov8_state_dict(checkpoint):
    """`state_dict_of(checkpoint)`, saying what to install when the `.pt` pickles ultralytics' model object."""
    try:
        return state_dict_of(checkpoint)
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("ultralytics"):
            raise
        raise ImportError(f"checkpoint {checkpoint!r} pickles ultralytics' model object: install "
                          "`ultralytics` to read it (or convert it to .npz where it is installed)") from error


def yolov8_size_of(state):
    """The yolov8.yaml scale (`"n"` ... `"x"`) of a state dict, from its stem and first C2f."""
    from keras_yolo.models.yolov8 import YOLOV8_SCALES, channels, repeats

    try:
        stem = state["model.0.conv.weight"].shape[0]
    except KeyError:
        raise ValueError("not a yolov8 state dict: no model.0.conv.weight") from None
    if f"{HEAD}.cv2.0.2.weight" not in state:
        raise ValueError(f"no yolov8 Detect head at {HEAD} (only the P3-P5 yolov8 n/s/m/l/x "
                         "detection models are supported)")
    blocks = len({key.split(".")[3] for key in state if key.startswith("model.2.m.")})
    for size, (depth, width, max_channels) in YOLOV8_SCALES.items():
        if channels(64, width, max_channels) == stem and repeats(3, depth) == blocks:
            return size
    raise ValueError(f"no yolov8 size has a stem of {stem} channels and {blocks} bottlenecks "
                     f"in model.2 (sizes: {sorted(YOLOV8_SCALES)})")


def decode_config_of(state, input_shape=(640, 640, 3)):
    """`{"version": "v8", "num_classes", "reg_max", "strides", "input_shape"}` of a yolov8 state dict."""
    from keras_yolo.models.yolov8 import STRIDES

    box = state[f"{HEAD}.cv2.0.2.weight"]
    if box.shape[0] % 4:
        raise ValueError(f"{HEAD}.cv2.0.2.weight has {box.shape[0]} outputs, not 4 * reg_max")
    return {"version": "v8", "num_classes": int(state[f"{HEAD}.cv3.0.2.weight"].shape[0]),
            "reg_max": int(box.shape[0] // 4), "strides": list(STRIDES),
            "input_shape": list(input_shape)}


def load_yolov8(checkpoint, input_shape=(640, 640, 3)):
    """Builds the matching `yolov8{n,s,m,l,x}` Keras model and loads a checkpoint into it.

    Args:
        checkpoint: `.pt` (ultralytics checkpoint or state dict), `.npz`, a
            torch module (e.g. `ultralytics.nn.tasks.DetectionModel`) or a state dict.
        input_shape: `(H, W, 3)`, multiples of 32, or `(None, None, 3)`.

    Returns:
        `YoloModel` with outputs `[(B, H/8, W/8, 4 reg_max + C), (B, H/16, ...), (B, H/32, ...)]`
        (ultralytics Detect's `cat(cv2[l](x), cv3[l](x))` in NHWC, before any activation),
        and `model.decode_config`: `{"version": "v8", "num_classes", "reg_max",
        "strides", "input_shape", "size"}`.

    Example:
        >>> model = load_yolov8("yolov8n.npz", input_shape=(320, 320, 3))
        >>> [o.shape[-1] for o in model.outputs]
        [144, 144, 144]
    """
    from keras_yolo.models.yolov8 import yolov8_size

    state = yolov8_state_dict(checkpoint)
    size = yolov8_size_of(state)
    config = decode_config_of(state, input_shape)
    model = yolov8_size(size, num_classes=config["num_classes"], input_shape=tuple(input_shape),
                        reg_max=config["reg_max"])
    load_yolov8_weights(model, state)
    config["size"] = size
    model.decode_config = config
    return model


def load_yolov8_weights(model, checkpoint):
    """Copies a yolov8 checkpoint into a model built by `keras_yolo.models.yolov8*`.

    All shapes are checked before anything is assigned: on a mismatch the
    model is left as it was and the error names the checkpoint tensor; a
    checkpoint tensor the model has no place for is an error too.
    Returns the model.
    """
    state = checkpoint if torch_state.is_state_dict(checkpoint) else yolov8_state_dict(checkpoint)
    known = set()
    if _DFL_KEY in state:
        projection = state[_DFL_KEY].reshape(-1)
        if not np.array_equal(projection, np.arange(projection.size, dtype=projection.dtype)):
            raise ValueError(f"checkpoint {_DFL_KEY!r} is not DFL's fixed projection 0 .. reg_max - 1")
        known.add(_DFL_KEY)
    return torch_state.copy_state(model, state, f"m{HEAD.split('.')[1]}_", known=known)
