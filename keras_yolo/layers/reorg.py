"""`Reorg`: YOLOv2's passthrough layer, stacking each s x s patch into channels."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_yolo")
class Reorg(keras.layers.Layer):
    """Space to depth: `(B, H, W, C)` -> `(B, H/s, W/s, s*s*C)`.

    The seed (YOLOv2): "the passthrough layer concatenates the higher resolution
    features with the low resolution features by stacking adjacent features into
    different channels": y[b, i, j, (dy*s + dx)*C + c] = x[b, s*i + dy, s*j + dx, c].

    `darknet_order=True` reproduces darknet's `reorg_cpu(..., forward=0)` instead,
    which reads the NCHW input buffer of shape `(C, H, W)` as if it were
    `(C/s², H*s, W*s)`, writes out[(dy*s + dx)*C/s² + c2, j, i] =
    x_view[c2, j*s + dy, i*s + dx] into a `(C, H, W)` buffer and hands that
    buffer on as `(s²C, H/s, W/s)`. Needed to run weights trained with
    darknet's yolov2.cfg.

    Args:
        stride: s; H and W must be multiples of it (C of s² with `darknet_order`).
        darknet_order: darknet's channel / position order instead of the seed's.

    Example:
        >>> Reorg(2)(keras.ops.ones((1, 26, 26, 64))).shape
        (1, 13, 13, 256)
    """

    def __init__(self, stride=2, darknet_order=False, **kwargs):
        super().__init__(**kwargs)
        if int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride!r}")
        self.stride = int(stride)
        self.darknet_order = bool(darknet_order)

    def call(self, inputs):
        s = self.stride
        shape = ops.shape(inputs)
        b, h, w, c = shape[0], shape[1], shape[2], inputs.shape[-1]
        if not self.darknet_order:
            x = ops.reshape(inputs, (b, h // s, s, w // s, s, c))
            x = ops.transpose(x, (0, 1, 3, 2, 4, 5))          # b, i, j, dy, dx, c
            return ops.reshape(x, (b, h // s, w // s, s * s * c))
        if c % (s * s):
            raise ValueError(f"darknet_order needs channels divisible by stride**2, got {c}")
        x = ops.transpose(inputs, (0, 3, 1, 2))                 # NCHW buffer (c, h, w)
        # The buffer read as (c2, h*s, w*s) with h*s = j*s + dy, w*s = i*s + dx (j < h, i < w).
        x = ops.reshape(x, (b, c // (s * s), h, s, w, s))       # c2, j, dy, i, dx
        x = ops.transpose(x, (0, 3, 5, 1, 2, 4))                # dy, dx, c2, j, i
        x = ops.reshape(x, (b, s * s * c, h // s, w // s))      # the (c, h, w) buffer read as (s²c, h/s, w/s)
        return ops.transpose(x, (0, 2, 3, 1))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.stride
        return (b, None if h is None else h // s, None if w is None else w // s, c * s * s)

    def get_config(self):
        config = super().get_config()
        config.update({"stride": self.stride, "darknet_order": self.darknet_order})
        return config
