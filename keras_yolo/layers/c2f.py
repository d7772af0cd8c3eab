"""YOLOv8's C2f: a CSP block whose every bottleneck output reaches the final 1x1 convolution.

Functional, like `keras_yolo.layers.csp`: it takes a Keras tensor, creates
named `ConvBNAct` layers after ultralytics' module names (`{name}_cv1`,
`{name}_m0_cv1`, ...; ultralytics `model.{i}.cv1`, `model.{i}.m.0.cv1`) and
returns a Keras tensor.
"""

import keras

from keras_yolo.layers.channel_group import ChannelGroup
from keras_yolo.layers.conv_bn import ConvBNAct


def apply_c2f(x, filters, num_blocks, shortcut=False, expansion=0.5, name="c2f", **conv_kwargs):
    """ultralytics `C2f`: y = cv2(concat(a, b, m_1(b), m_2(m_1(b)), ...)), where (a, b) = chunk(cv1(x), 2).

    cv1: 1x1 to 2c with c = int(filters * expansion); b, the second half of
    its channels, runs through `num_blocks` bottlenecks (two 3x3 convolutions
    c -> c, plus the input when `shortcut`), and every intermediate output is
    kept; cv2: 1x1 from (2 + num_blocks) c to `filters`. Unlike C3, the
    gradient reaches cv2 from each bottleneck directly. concat(a, b) is cv1's
    output itself, so it is used whole rather than split and rejoined.

    Args:
        x: `(B, H, W, C)` Keras tensor.
        filters: output channels.
        num_blocks: bottlenecks n (after the depth multiple).
        shortcut: residual sum inside the bottlenecks (ultralytics: True in
            the backbone, False in the neck).
        expansion: hidden channels c = int(filters * expansion).
        conv_kwargs: `ConvBNAct` arguments (activation, BN settings).

    Returns: `(B, H, W, filters)`.

    Example:
        >>> inputs = keras.Input((32, 32, 64))
        >>> apply_c2f(inputs, 128, 2, shortcut=True, activation="silu").shape
        (None, 32, 32, 128)
    """
    hidden = int(filters * expansion)
    if hidden < 1 or num_blocks < 0:
        raise ValueError(f"apply_c2f needs filters * expansion >= 1 and num_blocks >= 0, got "
                         f"filters={filters!r}, expansion={expansion!r}, num_blocks={num_blocks!r}")
    y = ConvBNAct(2 * hidden, 1, name=f"{name}_cv1", **conv_kwargs)(x)
    parts = [y]
    b = ChannelGroup(2, 1, name=f"{name}_split")(y)
    for i in range(num_blocks):
        block = f"{name}_m{i}"
        h = ConvBNAct(hidden, 3, name=f"{block}_cv1", **conv_kwargs)(b)
        h = ConvBNAct(hidden, 3, name=f"{block}_cv2", **conv_kwargs)(h)
        b = keras.layers.Add(name=f"{block}_add")([b, h]) if shortcut else h
        parts.append(b)
    y = keras.layers.Concatenate(name=f"{name}_concat")(parts) if len(parts) > 1 else y
    return ConvBNAct(filters, 1, name=f"{name}_cv2", **conv_kwargs)(y)
