"""Copying a torch state dict of an ultralytics network into its Keras twin.

The Keras builders name layers after the yaml modules (`m2_m0_cv1` is
`model.2.m.0.cv1`), so each `ConvBNAct` finds its `.conv.weight` (O, I, kh, kw)
and `.bn.{weight,bias,running_mean,running_var}` by name, and the head's plain
convolutions their `.weight` and `.bias`. Shared by the yolov5 and yolov8
importers.
"""

import re

import numpy as np

# BatchNorm's step counters (torch `num_batches_tracked`) carry no weights.
IGNORED_SUFFIXES = ("num_batches_tracked",)
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def torch_prefix(keras_name):
    """`m2_m0_cv1` -> `model.2.m.0.cv1`, `m22_cv3_1_2` -> `model.22.cv3.1.2`."""
    parts = []
    for i, token in enumerate(keras_name.split("_")):
        match = re.fullmatch(r"m(\d+)", token)
        parts.append((("model." if i == 0 else "m.") + match.group(1)) if match else token)
    return ".".join(parts)


def copy_state(model, state, head_prefix, head_torch_name=torch_prefix, known=()):
    """Copies `state` (name -> numpy array) into `model`; returns the model.

    Args:
        head_prefix: Keras name prefix of the head's plain `Conv2D` layers
            (e.g. `"m24_"`); every other weight sits in a `ConvBNAct`.
        head_torch_name: a head layer's Keras name -> its torch prefix.
        known: checkpoint keys the caller has checked itself (anchors, DFL's
            fixed projection) and that have no Keras weight.

    Every shape is checked before anything is assigned: on a mismatch the
    model is left as it was and the error names the checkpoint tensor; a
    tensor the model has no place for is an error too.
    """
    import keras

    state = {k: v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}
    used, assignments = set(known), []

    def take(key, shape):
        if key not in state:
            raise ValueError(f"checkpoint has no {key!r} (needed by model {model.name!r})")
        value = state[key]
        if value.shape != tuple(shape):
            raise ValueError(f"checkpoint {key!r} has shape {value.shape}, model {model.name!r} "
                             f"needs {tuple(shape)}")
        used.add(key)
        return value

    def kernel(key, conv):
        kh, kw, cin, cout = conv.kernel.shape
        return take(key, (cout, cin, kh, kw)).transpose(2, 3, 1, 0), cout

    for layer in model.layers:
        if hasattr(layer, "conv") and hasattr(layer, "bn") and isinstance(layer.conv, keras.layers.Conv2D):
            prefix = torch_prefix(layer.name)
            weights, cout = kernel(f"{prefix}.conv.weight", layer.conv)
            weights = [weights]
            if layer.conv.use_bias:
                weights.append(take(f"{prefix}.conv.bias", (cout,)))
            assignments.append((layer.conv, weights))
            if layer.bn is not None:
                assignments.append((layer.bn, [take(f"{prefix}.bn.{name}", (cout,))
                                               for name in BN_TENSORS]))
        elif isinstance(layer, keras.layers.Conv2D) and layer.name.startswith(head_prefix):
            prefix = head_torch_name(layer.name)
            weights, cout = kernel(f"{prefix}.weight", layer)
            assignments.append((layer, [weights, take(f"{prefix}.bias", (cout,))]))
    left = sorted(set(state) - used)
    if left:
        raise ValueError(f"checkpoint tensors model {model.name!r} has no place for: {left[:8]}"
                         f"{' ...' if len(left) > 8 else ''}")
    for layer, weights in assignments:
        layer.set_weights(weights)
    return model


def is_state_dict(checkpoint):
    """Whether `checkpoint` is already a dict of numpy arrays."""
    return isinstance(checkpoint, dict) and all(
        isinstance(v, np.ndarray) for v in checkpoint.values())
