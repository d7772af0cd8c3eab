"""Pieces every builder shares: the input, the detection head, the conv settings, `shapes_only`."""

import contextlib

import keras

from keras_yolo import keras_compat
from keras_yolo.layers.anchor_split import AnchorSplit

# darknet's BN: rolling statistics updated with .99 / .01 (convolutional_layer.c), epsilon 1e-5 (AlexeyAB).
DARKNET_CONV = {"activation": "leaky", "batch_norm_momentum": 0.99, "batch_norm_epsilon": 1e-5}
# ultralytics yolov5: nn.BatchNorm2d(eps=1e-3, momentum=0.03) (torch momentum m is Keras 1 - m), SiLU.
YOLOV5_CONV = {"activation": "silu", "batch_norm_momentum": 0.97, "batch_norm_epsilon": 1e-3}


def check_num_classes(num_classes):
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def image_input(input_shape, multiple=32, allow_dynamic=True):
    """`keras.Input` for `(H, W, 3)` images; H and W multiples of `multiple` (or None when allowed)."""
    if len(input_shape) != 3 or input_shape[-1] is None:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    for size in input_shape[:2]:
        if size is None and allow_dynamic:
            continue
        if size is None or int(size) % multiple or int(size) <= 0:
            raise ValueError(f"input_shape height and width must be positive multiples of {multiple}"
                             f"{'' if allow_dynamic else ' (this model has fixed-size dense layers)'}, "
                             f"got {input_shape!r}")
    return keras.Input(shape=tuple(input_shape), name="images")


def detection_head(x, num_anchors, num_classes, name):
    """1x1 convolution with bias to A*(5+C) channels, split to `(B, H, W, A, 5 + C)` (float32)."""
    x = keras.layers.Conv2D(num_anchors * (5 + num_classes), 1, use_bias=True, name=f"{name}_conv")(x)
    return AnchorSplit(num_anchors, name=name)(x)


@contextlib.contextmanager
def shapes_only():
    """Builds models without initialising their weights: for parameter counts, shapes and FLOPs.

    Inside, variables are created with their shapes but no values (Keras'
    deferred initialisation), so building yolov1's 284M parameters takes under
    a second; the models built here cannot run or train.

    Example:
        >>> with shapes_only():
        ...     model = build("yolov4")
        >>> model.count_params()
        64429405
    """
    # Keras keeps deferred variables in a global list and initialises them when the
    # next outermost StatelessScope closes; restore the list so they never are.
    get_deferred, set_deferred = keras_compat.deferred_variables()
    before = list(get_deferred() or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        set_deferred(before)
