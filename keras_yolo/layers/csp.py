"""Residual stages: Darknet-53's residual blocks, CSPDarknet53's cross-stage partial stages, YOLOv5's C3.

Functional blocks: each takes a Keras tensor and returns one, creating named
`ConvBNAct` layers, so any functional model can use them and `model.summary()`
reads as the stage structure (`{name}_cv1`, `{name}_m0_cv2`, ...).
"""

import keras

from keras_yolo.layers.channel_group import ChannelGroup
from keras_yolo.layers.conv_bn import ConvBNAct


def apply_bottleneck(x, filters, hidden_filters=None, shortcut=True, name="bottleneck", **conv_kwargs):
    """Residual bottleneck: y = x + cv2(cv1(x)), cv1 1x1 to `hidden_filters`, cv2 3x3 to `filters`.

    Darknet-53's residual unit (`[convolutional] 1x1, 3x3, [shortcut] from=-3`) and
    ultralytics' `Bottleneck`; the sum is dropped when `shortcut=False` or the
    channels differ.

    Args:
        x: `(B, H, W, C)`.
        filters: output channels.
        hidden_filters: channels of the 1x1 (default `filters // 2`).
        conv_kwargs: `ConvBNAct` arguments (activation, BN settings).

    Returns: `(B, H, W, filters)`.
    """
    hidden_filters = filters // 2 if hidden_filters is None else hidden_filters
    y = ConvBNAct(hidden_filters, 1, name=f"{name}_cv1", **conv_kwargs)(x)
    y = ConvBNAct(filters, 3, name=f"{name}_cv2", **conv_kwargs)(y)
    if shortcut and x.shape[-1] == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def apply_darknet_stage(x, filters, num_blocks, name="stage", **conv_kwargs):
    """Darknet-53 stage: a 3x3 stride-2 downsample to `filters`, then `num_blocks` residual units.

    Returns: `(B, H/2, W/2, filters)`.
    """
    x = ConvBNAct(filters, 3, strides=2, name=f"{name}_down", **conv_kwargs)(x)
    for i in range(num_blocks):
        x = apply_bottleneck(x, filters, filters // 2, name=f"{name}_m{i}", **conv_kwargs)
    return x


def apply_csp_stage(x, filters, num_blocks, first=False, name="csp", **conv_kwargs):
    """CSPDarknet53 stage (YOLOv4's backbone, darknet yolov4.cfg), cross-stage partial connection.

    d = down(x) (3x3 stride 2, `filters`); the stage splits d into two 1x1 branches,
    a = cv_skip(d) and b = cv_main(d); b runs `num_blocks` residual units and a 1x1
    transition, and the two meet again: y = cv_out(concat(b, a)). Half of the
    features skip the residual blocks, halving their cost and duplicating fewer
    gradients (Wang et al. 2020). The first stage keeps `filters` channels in both
    branches and narrows only its residual units (`[route] layers=-1,-7`).

    Args:
        x: `(B, H, W, C)`.
        filters: output channels of the downsample and of the stage.
        num_blocks: residual units (1, 2, 8, 8, 4 in CSPDarknet53).
        first: the first stage's widths.
        conv_kwargs: `ConvBNAct` arguments (activation="mish" in YOLOv4).

    Returns: `(B, H/2, W/2, filters)`.
    """
    branch = filters if first else filters // 2
    d = ConvBNAct(filters, 3, strides=2, name=f"{name}_down", **conv_kwargs)(x)
    a = ConvBNAct(branch, 1, name=f"{name}_skip", **conv_kwargs)(d)
    b = ConvBNAct(branch, 1, name=f"{name}_main", **conv_kwargs)(d)
    for i in range(num_blocks):
        b = apply_bottleneck(b, branch, branch // 2 if first else branch, name=f"{name}_m{i}",
                             **conv_kwargs)
    b = ConvBNAct(branch, 1, name=f"{name}_transition", **conv_kwargs)(b)
    y = keras.layers.Concatenate(name=f"{name}_concat")([b, a])
    return ConvBNAct(filters, 1, name=f"{name}_out", **conv_kwargs)(y)


def apply_c3(x, filters, num_blocks, shortcut=True, expansion=0.5, name="c3", **conv_kwargs):
    """YOLOv5's C3: y = cv3(concat(m(cv1(x)), cv2(x))), a CSP bottleneck with three convolutions.

    cv1, cv2: 1x1 to c_ = int(filters * expansion); m: `num_blocks` bottlenecks
    c_ -> c_ (hidden c_, with the sum if `shortcut`); cv3: 1x1 to `filters`.
    Names follow ultralytics' module names (`cv1`, `cv2`, `cv3`, `m.0.cv1`, ...).

    Returns: `(B, H, W, filters)`.
    """
    hidden = int(filters * expansion)
    a = ConvBNAct(hidden, 1, name=f"{name}_cv1", **conv_kwargs)(x)
    b = ConvBNAct(hidden, 1, name=f"{name}_cv2", **conv_kwargs)(x)
    for i in range(num_blocks):
        a = apply_bottleneck(a, hidden, hidden, shortcut=shortcut, name=f"{name}_m{i}", **conv_kwargs)
    y = keras.layers.Concatenate(name=f"{name}_concat")([a, b])
    return ConvBNAct(filters, 1, name=f"{name}_cv3", **conv_kwargs)(y)


def apply_tiny_csp_block(x, name="tiny_csp", **conv_kwargs):
    """YOLOv4-tiny's CSP block on a 3x3 conv output x with C channels (darknet yolov4-tiny.cfg).

    g = second half of x's channels (`[route] groups=2 group_id=1`); a = conv3(g);
    b = conv3(a) (C/2 each); t = conv1(concat(b, a)) (C); y = concat(x, t) (2C).

    Returns: `(y, t)`: the block output and its transition, which the neck reuses.
    """
    channels = x.shape[-1]
    g = ChannelGroup(2, 1, name=f"{name}_group")(x)
    a = ConvBNAct(channels // 2, 3, name=f"{name}_cv1", **conv_kwargs)(g)
    b = ConvBNAct(channels // 2, 3, name=f"{name}_cv2", **conv_kwargs)(a)
    t = keras.layers.Concatenate(name=f"{name}_concat")([b, a])
    t = ConvBNAct(channels, 1, name=f"{name}_cv3", **conv_kwargs)(t)
    return keras.layers.Concatenate(name=f"{name}_out")([x, t]), t
