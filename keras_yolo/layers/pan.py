"""PAN: path aggregation (Liu et al. 2018), YOLOv4's neck: a top-down FPN, then a bottom-up path."""

import keras

from keras_yolo.layers.conv_bn import ConvBNAct


def apply_pan(features, filters, block, strides=(8, 16, 32), name="neck", **conv_kwargs):
    """Top-down then bottom-up aggregation of features in ascending stride (darknet yolov4.cfg's neck).

    With C_l the inputs (the deepest already reduced, e.g. by SPP) and f_l = filters[l]:

        top-down   T_L = C_L;  T_l = block(concat(lateral_l(C_l), up(reduce_l(T_{l+1}))), f_l)
        bottom-up  N_0 = T_0;  N_l = block(concat(down_l(N_{l-1}), T_l), f_l)

    lateral and reduce are 1x1 convs to f_l, up a 2x nearest upsample, down a 3x3
    stride-2 conv to f_l. The bottom-up path gives the deep levels a short path
    from the fine, well-localised features.

    Args:
        features: list of `(B, H/s, W/s, C)` tensors in ascending stride.
        filters: channels f_l of each level.
        block: `block(x, filters, name)` applied after each concatenation
            (YOLOv4: five alternating 1x1 / 3x3 convs).
        strides: strides of the levels, used in the layer names (`{name}_td16_...`, `{name}_bu32_...`).
        conv_kwargs: `ConvBNAct` arguments of the lateral / reduce / down convs.

    Returns: list `[N_0, ..., N_L]` with f_l channels, same sizes as the inputs.
    """
    if len(features) != len(filters) or len(features) != len(strides) or len(features) < 2:
        raise ValueError(f"features, filters and strides must have the same length >= 2, got "
                         f"{len(features)}, {len(filters)}, {len(strides)}")
    top_down = [None] * len(features)
    top_down[-1] = x = features[-1]
    for level in range(len(features) - 2, -1, -1):
        f, s = filters[level], strides[level]
        up = ConvBNAct(f, 1, name=f"{name}_td{s}_reduce", **conv_kwargs)(x)
        up = keras.layers.UpSampling2D(2, name=f"{name}_td{s}_upsample")(up)
        lateral = ConvBNAct(f, 1, name=f"{name}_td{s}_lateral", **conv_kwargs)(features[level])
        x = keras.layers.Concatenate(name=f"{name}_td{s}_concat")([lateral, up])
        top_down[level] = x = block(x, f, name=f"{name}_td{s}")
    outputs = [top_down[0]]
    for level in range(1, len(features)):
        f, s = filters[level], strides[level]
        down = ConvBNAct(f, 3, strides=2, name=f"{name}_bu{s}_down", **conv_kwargs)(x)
        x = keras.layers.Concatenate(name=f"{name}_bu{s}_concat")([down, top_down[level]])
        x = block(x, f, name=f"{name}_bu{s}")
        outputs.append(x)
    return outputs
