"""Keras layers that reproduce darknet operations Keras has no exact twin of.

Used by `keras_yolo.weights.darknet.load_darknet`; each is registered so a
converted model saves to and loads from a `.keras` file.
"""

import keras
from keras import ops

# darknet (pjreddie, AlexeyAB) clamps the mish softplus at this input.
MISH_THRESHOLD = 20.0


@keras.saving.register_keras_serializable(package="keras_yolo")
class DarknetMaxPool2D(keras.layers.Layer):
    """darknet's [maxpool]: pads `padding // 2` cells of -inf on top/left.

    darknet: out = (h + padding - size) // stride + 1, window of output
    (i, j) starts at input (i * stride - padding // 2, j * stride - padding // 2);
    cells outside the input never win. The bottom/right pad is whatever makes
    the last window fit (it can be 0 or negative: then rows are cropped).

    Args:
        pool_size: darknet `size`.
        strides: darknet `stride`.
        padding: darknet `padding` (default there: `size - 1`).

    Example:
        >>> DarknetMaxPool2D(2, 1, 1)(x)   # yolov3-tiny's 13x13 -> 13x13 pool
    """

    def __init__(self, pool_size, strides, padding, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.strides = int(strides)
        self.padding = int(padding)

    def _pads(self, size):
        out = (size + self.padding - self.pool_size) // self.strides + 1
        before = self.padding // 2
        after = (out - 1) * self.strides + self.pool_size - size - before
        return out, before, after

    def call(self, inputs):
        _, height, width, _ = inputs.shape
        _, top, bottom = self._pads(height)
        _, left, right = self._pads(width)
        x = inputs
        if bottom < 0:
            x = x[:, : height + bottom]
            bottom = 0
        if right < 0:
            x = x[:, :, : width + right]
            right = 0
        if top or bottom or left or right:
            x = ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]],
                        constant_values=float("-inf"))
        return ops.max_pool(x, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, self._pads(height)[0], self._pads(width)[0], channels)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides,
                      padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="keras_yolo")
class DarknetReorg(keras.layers.Layer):
    """darknet's [reorg] (YOLOv2 passthrough): (H, W, C) -> (H/s, W/s, C s^2).

    Two orders exist:
      - `"darknet2018"` (pjreddie, the layer the original yolov2.weights were
        trained with): `reorg_cpu(input, w, h, c, ..., forward=0)` reads the
        (C, H, W) input buffer as a (C/s^2, H s, W s) array X, writes
        O[(dy s + dx) C/s^2 + c, j, i] = X[c, j s + dy, i s + dx] into a
        (C, H, W) buffer and hands that buffer on as (C s^2, H/s, W/s).
      - `"space_to_depth"` (AlexeyAB darknet): the true space-to-depth,
        out[j, i, (dy s + dx) C + c] = in[j s + dy, i s + dx, c] (NHWC), equal
        to `tf.nn.space_to_depth`.

    Args:
        stride: s.
        order: `"darknet2018"` or `"space_to_depth"`.

    Example:
        >>> DarknetReorg(2)(keras.ops.ones((1, 26, 26, 64))).shape   # yolov2's passthrough
        (1, 13, 13, 256)
    """

    ORDERS = ("darknet2018", "space_to_depth")

    def __init__(self, stride, order="darknet2018", **kwargs):
        super().__init__(**kwargs)
        if order not in self.ORDERS:
            raise ValueError(f"order must be one of {self.ORDERS}, got {order!r}")
        self.stride = int(stride)
        self.order = order

    def call(self, inputs):
        s = self.stride
        _, height, width, channels = inputs.shape
        x = ops.transpose(inputs, (0, 3, 1, 2))  # darknet memory order (C, H, W)
        if self.order == "darknet2018":
            c_in, h_in, w_in = channels // (s * s), height * s, width * s
        else:
            c_in, h_in, w_in = channels, height, width
        x = ops.reshape(x, (-1, c_in, h_in // s, s, w_in // s, s))
        x = ops.transpose(x, (0, 3, 5, 1, 2, 4))  # (dy, dx, c, j, i)
        x = ops.reshape(x, (-1, c_in * s * s, h_in // s, w_in // s))
        if self.order == "darknet2018":
            x = ops.reshape(x, (-1, channels * s * s, height // s, width // s))
        return ops.transpose(x, (0, 2, 3, 1))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        s = self.stride
        return (batch, height // s, width // s, channels * s * s)

    def get_config(self):
        config = super().get_config()
        config.update(stride=self.stride, order=self.order)
        return config


@keras.saving.register_keras_serializable(package="keras_yolo")
class DarknetLocal(keras.layers.Layer):
    """darknet's [local]: a convolution with separate weights per output cell.

    out[j, i, n] = b[j, i, n] + sum_k patch[j, i, k] W[j, i, k, n], patches of
    `size x size x C` taken with `stride` after `padding` zeros on each side,
    k ordered (dy, dx, c).

    Args:
        filters: darknet `filters` (n).
        size: kernel size.
        strides: darknet `stride`.
        padding: zero cells on each side (darknet passes its `pad` value).

    Example:
        >>> DarknetLocal(256, 3, 1, 1)(keras.ops.ones((1, 7, 7, 1024))).shape   # yolov1
        (1, 7, 7, 256)
    """

    def __init__(self, filters, size, strides=1, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.size = int(size)
        self.strides = int(strides)
        self.padding = int(padding)

    def _out(self, size):
        return (size + 2 * self.padding - self.size) // self.strides + 1

    def build(self, input_shape):
        _, height, width, channels = input_shape
        out_h, out_w = self._out(height), self._out(width)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(out_h, out_w, self.size * self.size * channels, self.filters),
            initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(out_h, out_w, self.filters),
                                    initializer="zeros")

    def call(self, inputs):
        p = self.padding
        x = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]]) if p else inputs
        out_h, out_w = self.kernel.shape[0], self.kernel.shape[1]
        span_h = self.strides * (out_h - 1) + 1
        span_w = self.strides * (out_w - 1) + 1
        patches = [x[:, dy: dy + span_h: self.strides, dx: dx + span_w: self.strides]
                   for dy in range(self.size) for dx in range(self.size)]
        patches = ops.concatenate(patches, axis=-1)  # k ordered (dy, dx, c)
        return ops.einsum("bhwk,hwkn->bhwn", patches, self.kernel) + self.bias

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, self._out(height), self._out(width), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, size=self.size, strides=self.strides,
                      padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="keras_yolo")
class DarknetFlatten(keras.layers.Layer):
    """Flattens (B, H, W, C) in darknet's memory order (C, H, W) to (B, 1, 1, CHW).

    darknet's [connected] and [detection] layers read their input this way;
    the 1x1 spatial shape keeps every tensor of a converted model 4-D.

    Example:
        >>> DarknetFlatten()(keras.ops.ones((1, 7, 7, 256))).shape
        (1, 1, 1, 12544)
    """

    def call(self, inputs):
        _, height, width, channels = inputs.shape
        x = ops.transpose(inputs, (0, 3, 1, 2))
        return ops.reshape(x, (-1, 1, 1, channels * height * width))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, 1, 1, channels * height * width)


@keras.saving.register_keras_serializable(package="keras_yolo")
class DarknetDetectionLayout(keras.layers.Layer):
    """YOLOv1 [detection] input (B, 1, 1, S S (C + Bx (1 + 4))) to (B, S, S, Bx*5 + C).

    darknet stores, for cells i = row * S + col: all class scores
    [S S, C], then all confidences [S S, Bx], then all boxes [S S, Bx, 4];
    keras-yolo's v1 layout is per cell [x, y, w, h, o] per box, then C scores.

    Args:
        side: S.
        num: Bx (darknet `num`).
        classes: C.

    Example:
        >>> DarknetDetectionLayout(7, 2, 20)(keras.ops.ones((1, 1, 1, 1470))).shape
        (1, 7, 7, 30)
    """

    def __init__(self, side, num, classes, **kwargs):
        super().__init__(**kwargs)
        self.side, self.num, self.classes = int(side), int(num), int(classes)

    def call(self, inputs):
        cells = self.side * self.side
        x = ops.reshape(inputs, (-1, cells * (self.classes + 5 * self.num)))
        scores = ops.reshape(x[:, : cells * self.classes], (-1, cells, self.classes))
        start = cells * self.classes
        conf = ops.reshape(x[:, start: start + cells * self.num], (-1, cells, self.num, 1))
        start += cells * self.num
        coords = ops.reshape(x[:, start:], (-1, cells, self.num, 4))
        boxes = ops.reshape(ops.concatenate([coords, conf], axis=-1),
                            (-1, cells, self.num * 5))
        out = ops.concatenate([boxes, scores], axis=-1)
        return ops.reshape(out, (-1, self.side, self.side, self.num * 5 + self.classes))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.side, self.side, self.num * 5 + self.classes)

    def get_config(self):
        config = super().get_config()
        config.update(side=self.side, num=self.num, classes=self.classes)
        return config


@keras.saving.register_keras_serializable(package="keras_yolo")
class DarknetActivation(keras.layers.Layer):
    """darknet activations by their cfg names.

    linear: x; leaky: x if x > 0 else 0.1 x; relu; logistic: 1 / (1 + e^-x);
    tanh; elu; swish: x sigmoid(x); mish: x tanh(softplus(x)) with darknet's
    softplus(x) = x for x > 20 (exp(x) for x < -20, which equals log1p(exp(x))
    to float precision).

    Example:
        >>> DarknetActivation("leaky")(keras.ops.array([-1.0, 2.0]))   # [-0.1, 2.0]
    """

    NAMES = ("linear", "leaky", "relu", "logistic", "tanh", "elu", "swish", "mish")
    LEAKY_SLOPE = 0.1  # darknet's leaky_activate

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        if activation not in self.NAMES:
            raise ValueError(
                f"activation={activation!r} is not supported; supported: {self.NAMES}")
        self.activation = activation

    def call(self, x):
        name = self.activation
        if name == "linear":
            return x
        if name == "leaky":
            return ops.where(x > 0, x, self.LEAKY_SLOPE * x)
        if name == "relu":
            return ops.relu(x)
        if name == "logistic":
            return ops.sigmoid(x)
        if name == "tanh":
            return ops.tanh(x)
        if name == "elu":
            return ops.where(x >= 0, x, ops.exp(x) - 1.0)
        if name == "swish":
            return x * ops.sigmoid(x)
        softplus = ops.where(x > MISH_THRESHOLD, x,
                             ops.softplus(ops.minimum(x, MISH_THRESHOLD)))
        return x * ops.tanh(softplus)

    def get_config(self):
        config = super().get_config()
        config.update(activation=self.activation)
        return config


@keras.saving.register_keras_serializable(package="keras_yolo")
class DarknetChannelGroup(keras.layers.Layer):
    """AlexeyAB [route] groups/group_id: channels [id C/g, (id + 1) C/g) of the input.

    Args:
        groups: g, the number of equal channel groups.
        group_id: which group to keep.

    Example:
        >>> DarknetChannelGroup(2, 1)(keras.ops.ones((1, 52, 52, 64))).shape   # yolov4-tiny
        (1, 52, 52, 32)
    """

    def __init__(self, groups, group_id, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.group_id = int(groups), int(group_id)
        if not 0 <= self.group_id < self.groups:
            raise ValueError(f"group_id={group_id} must be in [0, groups={groups})")

    def call(self, inputs):
        width = inputs.shape[-1] // self.groups
        return inputs[..., self.group_id * width: (self.group_id + 1) * width]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.groups)

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups, group_id=self.group_id)
        return config
