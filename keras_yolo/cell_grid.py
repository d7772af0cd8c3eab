"""YOLOv1's cell grid: the raw `(B, S, S, Bx*5 + C)` layout and its parametrisations.

YOLOv1 has no anchors: each of the S x S cells predicts `Bx` boxes and one
set of class scores. `YoloV1Decode` and `YoloV1Loss` both read the raw
output through `parametrize`, so training and inference agree.

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

import tensorflow as tf

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
