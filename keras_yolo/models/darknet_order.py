"""`darknet_layer_names(name)`: the weighted layers of a built darknet-family model in cfg order.

darknet's `.weights` file stores the weighted layers (`[convolutional]`,
`[connected]`) one after the other in cfg order; this list names the layers of
`build(name)` in that order, so a `.weights` file can be read into the model
layer by layer (`ConvBNAct`: biases, then scales, rolling means, rolling
variances with BN, then the `(filters, C_in / groups, k, k)` kernel).
Caveats: yolov1's dense layers read darknet's CHW-flattened features and lay
out the output differently (darknet's `[detection]`: all class scores, then
confidences, then boxes), and yolov2 needs `build("yolov2", darknet_reorg=True)`.

Example:
    >>> darknet_layer_names("yolov3-tiny")[:3]
    ['backbone_conv1', 'backbone_conv2', 'backbone_conv3']
"""

from keras_yolo.models.yolov3 import DARKNET53_STAGES
from keras_yolo.models.yolov4 import CSPDARKNET53_STAGES

_YOLOV1_CONVS, _YOLOV1_TINY_CONVS = 24, 8
_DARKNET19_CONVS = 18


def _conv_set(prefix, spp=False):
    names = [f"{prefix}_cv1", f"{prefix}_cv2", f"{prefix}_cv3"]
    return names + ([f"{prefix}_spp_cv"] if spp else []) + [f"{prefix}_cv4", f"{prefix}_cv5"]


def _yolov3(spp):
    names = ["backbone_stem"]
    for i, (_, blocks) in enumerate(DARKNET53_STAGES, start=1):
        names.append(f"backbone_stage{i}_down")
        for j in range(blocks):
            names += [f"backbone_stage{i}_m{j}_cv1", f"backbone_stage{i}_m{j}_cv2"]
    for stride in (32, 16, 8):
        if stride != 32:
            names.append(f"neck_p{stride}_lateral")
        names += _conv_set(f"neck_p{stride}", spp=spp and stride == 32)
        names += [f"head_p{stride}_conv", f"p{stride}_conv"]
    return names


def _yolov4():
    names = ["backbone_stem"]
    for i, (_, blocks) in enumerate(CSPDARKNET53_STAGES, start=1):
        stage = f"backbone_stage{i}"
        names += [f"{stage}_down", f"{stage}_skip", f"{stage}_main"]
        for j in range(blocks):
            names += [f"{stage}_m{j}_cv1", f"{stage}_m{j}_cv2"]
        names += [f"{stage}_transition", f"{stage}_out"]
    names += [f"neck_spp_cv{i}" for i in range(1, 7)]
    for stride in (16, 8):
        names += [f"neck_td{stride}_reduce", f"neck_td{stride}_lateral"] + _conv_set(f"neck_td{stride}")
    names += ["head_p8_conv", "p8_conv"]
    for stride in (16, 32):
        names += [f"neck_bu{stride}_down"] + _conv_set(f"neck_bu{stride}") + [f"head_p{stride}_conv",
                                                                              f"p{stride}_conv"]
    return names


def _yolov4_tiny():
    names = ["backbone_conv1", "backbone_conv2"]
    for i in (1, 2, 3):
        names += [f"backbone_stage{i}_conv", f"backbone_stage{i}_cv1", f"backbone_stage{i}_cv2",
                  f"backbone_stage{i}_cv3"]
    return names + ["backbone_conv3", "neck_p32_cv1", "head_p32_conv", "p32_conv", "neck_p16_lateral",
                    "head_p16_conv", "p16_conv"]


_ORDERS = {
    "yolov1": lambda: [f"conv{i}" for i in range(1, _YOLOV1_CONVS + 1)] + ["fc1", "fc2"],
    "yolov1-tiny": lambda: [f"conv{i}" for i in range(1, _YOLOV1_TINY_CONVS + 1)] + ["fc1"],
    "yolov2": lambda: ([f"backbone_conv{i}" for i in range(1, _DARKNET19_CONVS + 1)]
                       + ["head_conv1", "head_conv2", "passthrough_conv", "head_conv3", "p5_conv"]),
    "yolov2-tiny": lambda: [f"backbone_conv{i}" for i in range(1, 8)] + ["head_conv1", "p5_conv"],
    "yolov3": lambda: _yolov3(spp=False),
    "yolov3-spp": lambda: _yolov3(spp=True),
    "yolov3-tiny": lambda: ([f"backbone_conv{i}" for i in range(1, 8)]
                            + ["neck_p32_cv1", "head_p32_conv", "p32_conv", "neck_p16_lateral", "head_p16_conv",
                               "p16_conv"]),
    "yolov4": _yolov4,
    "yolov4-tiny": _yolov4_tiny,
}


def darknet_layer_names(name):
    """Names of the weighted layers of `build(name)` in darknet cfg order (v1 - v4 models)."""
    if name not in _ORDERS:
        raise ValueError(f"name must be one of {sorted(_ORDERS)} (darknet models), got {name!r}")
    return _ORDERS[name]()
