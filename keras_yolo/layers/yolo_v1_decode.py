"""YOLOv1 head decoding: raw `(B, S, S, Bx*5 + C)` output to boxes and scores.

Two parametrisations of a box `[t_x, t_y, t_w, t_h, t_o]` and the cell's
class scores `c_k`:

* `"logistic"` (the seed's): `x = σ(t_x)`, `y = σ(t_y)`, `w = σ(t_w)`,
  `h = σ(t_h)`, `C = σ(t_o)`, `p(c_k) = softmax(c)_k`.
* `"linear"` (the paper's network as darknet's `[detection]` layer runs it):
  `x = t_x`, `y = t_y`, `w = t_w²`, `h = t_h²` (with `sqrt=True`: the net
  predicts the square roots; `w = t_w` with `sqrt=False`), `C = t_o`,
  `p(c_k) = c_k` (or `softmax(c)_k` with `softmax=True`).

In both, `x, y` are the centre's offset inside cell `(row, col)` in cell
units and `w, h` fractions of the image, so the box centre in the image is
`((col + x) / S, (row + y) / S)`.

Darknet stores the same numbers in another order (one flat vector per image:
all class scores, then all confidences, then all coordinates);
`to_darknet_layout` / `from_darknet_layout` convert.
"""

import keras
import tensorflow as tf

from keras_yolo import boxes as box_ops

PARAMETRIZATIONS = ("logistic", "linear")
# The linear parametrisation decodes raw values as they are (w = t_w²): the
# decoder clips t_x, t_y, t_w, t_h to this magnitude first, so every box and
# its pixel area stay finite (1e4 is thousands of images; darknet's boxes
# overflow to inf near 1.8e19).
MAX_LINEAR_COORDINATE = 1e4


def sqrt_sigmoid(t):
    """`sqrt(σ(t))` computed as `exp(-softplus(-t) / 2)`: finite gradient
    everywhere, also where `σ(t)` underflows to 0."""
    return tf.exp(-0.5 * tf.nn.softplus(-t))


def resolve_options(parametrization, sqrt, softmax):
    """Validates the decoding options; returns `(parametrization, sqrt, softmax)`.

    `sqrt` and `softmax` belong to the linear parametrisation (defaults
    `True`, `False` as in darknet's `cfg/yolov1.cfg`); the logistic one is
    fixed by the seed (`sqrt` of `σ(t_w)` in the loss, softmax classes).
    """
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"`parametrization` must be one of {PARAMETRIZATIONS}; got "
            f"{parametrization!r}.")
    if parametrization == "logistic":
        if sqrt is False or softmax is False:
            raise ValueError(
                "`sqrt` and `softmax` apply to parametrization='linear' only; "
                f"got sqrt={sqrt!r}, softmax={softmax!r} with 'logistic'.")
        return parametrization, True, True
    return (parametrization, True if sqrt is None else bool(sqrt),
            False if softmax is None else bool(softmax))


def split_raw(raw, boxes_per_cell, num_classes):
    """`(B, S, S, Bx*5 + C)` -> `(boxes (B, S, S, Bx, 5), classes (B, S, S, C))`."""
    shape = raw.shape
    expected = boxes_per_cell * 5 + num_classes
    if len(shape) != 4 or shape[-1] != expected:
        raise ValueError(
            "The raw YOLOv1 output must be (batch, S, S, boxes_per_cell * 5 + "
            f"num_classes) = (batch, S, S, {expected}); got shape "
            f"{tuple(shape)}.")
    s1, s2 = shape[1], shape[2]
    boxes = tf.reshape(raw[..., :boxes_per_cell * 5],
                       [-1, s1, s2, boxes_per_cell, 5])
    return boxes, raw[..., boxes_per_cell * 5:]


def ensure_raw_shape(raw, grid_size, boxes_per_cell, num_classes, owner):
    """Gives a raw output whose grid or depth is unknown at trace time its
    static shape `(B, S, S, Bx*5 + C)`, checked at run time (the message
    names `owner`'s arguments); a statically known shape passes unchanged."""
    s, n, c = grid_size, boxes_per_cell, num_classes
    if raw.shape.rank != 4 or None not in raw.shape[1:]:
        return raw
    expected = [s, s, n * 5 + c]
    check = tf.debugging.assert_equal(
        tf.shape(raw)[1:], tf.constant(expected), message=(
            f"{owner}(grid_size={s}, boxes_per_cell={n}, num_classes={c}) "
            f"expects raw outputs of shape (batch, {s}, {s}, {n * 5 + c})"))
    with tf.control_dependencies([check]):
        return tf.ensure_shape(tf.identity(raw), [None] + expected)


def parametrize(raw, boxes_per_cell, num_classes, parametrization="logistic",
                sqrt=None, softmax=None):
    """Applies a parametrisation to the raw output (float32).

    Returns:
        dict of `"xy"` `(B, S, S, Bx, 2)` cell offsets, `"wh"` `(B, S, S,
        Bx, 2)` image fractions, `"sqrt_wh"` (what the loss compares with
        `sqrt(ŵ), sqrt(ĥ)`; `wh` itself when `sqrt=False`), `"confidence"`
        `(B, S, S, Bx)` and `"class_probs"` `(B, S, S, C)`.
    """
    parametrization, sqrt, softmax = resolve_options(
        parametrization, sqrt, softmax)
    raw = tf.cast(raw, tf.float32)
    boxes, classes = split_raw(raw, boxes_per_cell, num_classes)
    t_xy, t_wh, t_o = boxes[..., :2], boxes[..., 2:4], boxes[..., 4]
    if parametrization == "logistic":
        root = sqrt_sigmoid(t_wh)
        return {"xy": tf.sigmoid(t_xy), "wh": tf.sigmoid(t_wh),
                "sqrt_wh": root, "confidence": tf.sigmoid(t_o),
                "class_probs": tf.nn.softmax(classes, axis=-1)}
    return {"xy": t_xy, "wh": tf.square(t_wh) if sqrt else t_wh,
            "sqrt_wh": t_wh, "confidence": t_o,
            "class_probs": tf.nn.softmax(classes, -1) if softmax else classes}


def to_darknet_layout(raw, boxes_per_cell, num_classes):
    """`(B, S, S, Bx*5 + C)` -> darknet's flat `(B, S*S*(Bx*5 + C))`:
    `[S*S*C class scores][S*S*Bx confidences][S*S*Bx*4 coordinates]`,
    cells row-major."""
    boxes, classes = split_raw(raw, boxes_per_cell, num_classes)
    batch = tf.shape(raw)[0]
    return tf.concat([tf.reshape(classes, [batch, -1]),
                      tf.reshape(boxes[..., 4], [batch, -1]),
                      tf.reshape(boxes[..., :4], [batch, -1])], axis=-1)


def from_darknet_layout(flat, grid_size, boxes_per_cell, num_classes):
    """Inverse of `to_darknet_layout`: `(B, S*S*(Bx*5 + C))` to
    `(B, S, S, Bx*5 + C)`."""
    s, n, c = grid_size, boxes_per_cell, num_classes
    cells = s * s
    batch = tf.shape(flat)[0]
    classes = tf.reshape(flat[:, :cells * c], [batch, s, s, c])
    conf = tf.reshape(flat[:, cells * c:cells * (c + n)], [batch, s, s, n, 1])
    coords = tf.reshape(flat[:, cells * (c + n):], [batch, s, s, n, 4])
    boxes = tf.reshape(tf.concat([coords, conf], -1), [batch, s, s, n * 5])
    return tf.concat([boxes, classes], axis=-1)


@keras.saving.register_keras_serializable(package="keras_yolo")
class YoloV1Decode(keras.layers.Layer):
    """Decodes YOLOv1's raw output into boxes, objectness and class probabilities.

    With `σ` the logistic function and `(row, col)` the cell, each of the
    `Bx` boxes of a cell decodes to (seed parametrisation)

        x = (col + σ(t_x)) / S,  y = (row + σ(t_y)) / S,
        w = σ(t_w),  h = σ(t_h),  C = σ(t_o),  p(c_k) = softmax(c)_k

    (image fractions; `parametrization="linear"` gives darknet's
    `x = (col + t_x) / S`, `w = t_w²`, `C = t_o`, `p = c`, with `t_x, t_y,
    t_w, t_h` clipped to `±MAX_LINEAR_COORDINATE` so that boxes are always
    finite). Every box of a
    cell shares the cell's class probabilities; the score of a class is
    `objectness * class_probs` (darknet: `scale * predictions[class]`).

    Args:
        num_classes: C.
        grid_size: S.
        boxes_per_cell: the seed's B (here Bx).
        bounding_box_format: format of the output boxes.
        image_shape: `(height, width)` of the input image; required for
            pixel formats.
        parametrization: `"logistic"` (seed) or `"linear"` (darknet).
        sqrt: linear only: `t_w, t_h` are square roots (default True).
        softmax: linear only: softmax over class scores (default False).

    Input: `(B, S, S, Bx*5 + C)` raw output, any float dtype; the batch
    size may be unknown until run time.

    Output: dict of `"boxes"` `(B, S*S*Bx, 4)`, `"objectness"` `(B, S*S*Bx)`,
    `"class_probs"` `(B, S*S*Bx, C)`, float32, ordered cell by cell
    (row-major) and box by box within a cell, as darknet's
    `get_detection_boxes`.

    Example:
        >>> decode = YoloV1Decode(num_classes=20, grid_size=7, boxes_per_cell=2)
        >>> out = decode(tf.zeros([1, 7, 7, 30]))
        >>> out["boxes"].shape   # (1, 98, 4)
    """

    def __init__(self, num_classes, grid_size=7, boxes_per_cell=2,
                 bounding_box_format="rel_center_xywh", image_shape=None,
                 parametrization="logistic", sqrt=None, softmax=None,
                 **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_classes", num_classes)
        check_positive_int("grid_size", grid_size)
        check_positive_int("boxes_per_cell", boxes_per_cell)
        check_format(bounding_box_format, image_shape)
        resolve_options(parametrization, sqrt, softmax)
        self.num_classes = num_classes
        self.grid_size = grid_size
        self.boxes_per_cell = boxes_per_cell
        self.bounding_box_format = bounding_box_format
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.parametrization = parametrization
        self.sqrt = sqrt
        self.softmax = softmax

    def call(self, raw):
        s, n, c = self.grid_size, self.boxes_per_cell, self.num_classes
        raw = ensure_raw_shape(tf.cast(raw, tf.float32), s, n, c,
                               "YoloV1Decode")
        if raw.shape[1] != s or raw.shape[2] != s:
            raise ValueError(
                f"YoloV1Decode(grid_size={s}) got raw output of shape "
                f"{tuple(raw.shape)}; expected (batch, {s}, {s}, {n * 5 + c}).")
        if self.parametrization == "linear":
            boxes, classes = split_raw(raw, n, c)
            coords = tf.clip_by_value(boxes[..., :4], -MAX_LINEAR_COORDINATE,
                                      MAX_LINEAR_COORDINATE)
            boxes = tf.concat([coords, boxes[..., 4:]], axis=-1)
            raw = tf.concat([tf.reshape(boxes, [-1, s, s, n * 5]), classes],
                            axis=-1)
        p = parametrize(raw, n, c, self.parametrization, self.sqrt,
                        self.softmax)
        col = tf.range(s, dtype=tf.float32)[None, None, :, None]
        row = tf.range(s, dtype=tf.float32)[None, :, None, None]
        x = (col + p["xy"][..., 0]) / s
        y = (row + p["xy"][..., 1]) / s
        boxes = tf.stack([x, y, p["wh"][..., 0], p["wh"][..., 1]], axis=-1)
        batch = tf.shape(raw)[0]
        boxes = tf.reshape(boxes, [batch, s * s * n, 4])
        boxes = box_ops.convert(boxes, "rel_center_xywh",
                                self.bounding_box_format, self.image_shape)
        probs = tf.broadcast_to(p["class_probs"][:, :, :, None, :],
                                [batch, s, s, n, c])
        return {"boxes": boxes,
                "objectness": tf.reshape(p["confidence"], [batch, s * s * n]),
                "class_probs": tf.reshape(probs, [batch, s * s * n, c])}

    def compute_output_spec(self, raw):
        n = self.grid_size * self.grid_size * self.boxes_per_cell
        batch = raw.shape[0]
        return {
            "boxes": keras.KerasTensor((batch, n, 4), "float32"),
            "objectness": keras.KerasTensor((batch, n), "float32"),
            "class_probs": keras.KerasTensor((batch, n, self.num_classes),
                                             "float32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, grid_size=self.grid_size,
            boxes_per_cell=self.boxes_per_cell,
            bounding_box_format=self.bounding_box_format,
            image_shape=self.image_shape,
            parametrization=self.parametrization, sqrt=self.sqrt,
            softmax=self.softmax)
        return config


def check_positive_int(name, value):
    """Raises a ValueError naming `name` unless `value` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")


def check_format(bounding_box_format, image_shape):
    """Raises a ValueError for an unknown format, or a pixel format without
    `image_shape`."""
    if bounding_box_format not in box_ops.FORMATS:
        raise ValueError(
            f"`bounding_box_format` must be one of {box_ops.FORMATS}; got "
            f"{bounding_box_format!r}.")
    if not bounding_box_format.startswith("rel_") and image_shape is None:
        raise ValueError(
            f"bounding_box_format={bounding_box_format!r} is in pixels: pass "
            "`image_shape=(height, width)` of the input image.")
