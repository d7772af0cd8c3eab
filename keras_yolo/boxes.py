"""Box formats and overlap measures (IoU, GIoU, DIoU, CIoU).

Formats use Keras 3's names. Pixel formats: ``xyxy``, ``yxyx``, ``xywh``
(top-left corner and size), ``center_xywh``. Relative formats (fractions of
the image): ``rel_xyxy``, ``rel_yxyx``, ``rel_xywh``, ``rel_center_xywh``.
Converting between a pixel and a relative format needs ``image_shape``
(``(height, width)`` or ``(height, width, channels)``).

Every function here is pure TensorFlow, shape-static and XLA-compilable. The
overlap measures compute in float32 (or float64 when given float64) whatever
the input dtype, so float16 inputs give finite values and gradients.
"""

import math

import tensorflow as tf

from keras_yolo.checks import FORMATS, check_format

VARIANTS = ("iou", "giou", "diou", "ciou")
# How each reference places its guards (see `iou`).
CONVENTIONS = ("stable", "darknet", "ultralytics", "ultralytics8")

# Guards divisions and logarithms at zero-area, identical or degenerate boxes.
EPSILON = 1e-7


# Base format -> (to corners, from corners), each on the four coordinates.
_CORNERS = {
    "xyxy": (lambda a, b, c, d: (a, b, c, d),
             lambda x1, y1, x2, y2: (x1, y1, x2, y2)),
    "yxyx": (lambda a, b, c, d: (b, a, d, c),
             lambda x1, y1, x2, y2: (y1, x1, y2, x2)),
    "xywh": (lambda a, b, c, d: (a, b, a + c, b + d),
             lambda x1, y1, x2, y2: (x1, y1, x2 - x1, y2 - y1)),
    "center_xywh": (
        lambda a, b, c, d: (a - c / 2, b - d / 2, a + c / 2, b + d / 2),
        lambda x1, y1, x2, y2: ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1,
                                y2 - y1)),
}


def _corners(boxes, fmt, direction):
    """Any format to corner form (direction 0) or back (1), same units."""
    base = fmt[4:] if fmt.startswith("rel_") else fmt
    return tf.stack(_CORNERS[base][direction](*tf.unstack(boxes, 4, axis=-1)),
                    axis=-1)


def _image_hw(image_shape, dtype):
    if image_shape is None:
        raise ValueError(
            "Converting between a pixel format and a `rel_` format needs "
            "`image_shape=(height, width)`; got image_shape=None."
        )
    if isinstance(image_shape, (tuple, list)):
        height, width = image_shape[0], image_shape[1]
    else:
        image_shape = tf.convert_to_tensor(image_shape)
        height, width = image_shape[..., 0], image_shape[..., 1]
    return tf.cast(height, dtype), tf.cast(width, dtype)


def convert(boxes, source, target, image_shape=None):
    """Converts boxes from one Keras 3 format to another.

    Args:
        boxes: `(..., 4)` tensor.
        source: format of `boxes`, one of `FORMATS`.
        target: wanted format, one of `FORMATS`.
        image_shape: `(height, width)` of the image, needed only when one of
            the two formats is relative (`rel_*`) and the other is not.

    Returns:
        `(..., 4)` tensor in `target`, same dtype as `boxes`.

    Example:
        >>> convert([[10., 20., 30., 60.]], "xyxy", "rel_center_xywh",
        ...         image_shape=(100, 200))   # [[0.1, 0.4, 0.1, 0.4]]
    """
    check_format(source, "source")
    check_format(target, "target")
    boxes = tf.convert_to_tensor(boxes)
    if not boxes.dtype.is_floating:
        boxes = tf.cast(boxes, tf.float32)
    if source == target:
        return boxes
    xyxy = _corners(boxes, source, 0)
    source_rel, target_rel = source.startswith("rel_"), target.startswith("rel_")
    if source_rel != target_rel:
        height, width = _image_hw(image_shape, boxes.dtype)
        scale = tf.stack([width, height, width, height], axis=-1)
        xyxy = xyxy * scale if source_rel else xyxy / scale
    return _corners(xyxy, target, 1)


def _compute_dtype(dtype):
    return tf.float64 if dtype == tf.float64 else tf.float32


def _overlap_terms(b1, b2):
    """Corner tensors (..., 4) -> the quantities every IoU variant needs."""
    x1, y1, x2, y2 = tf.unstack(b1, 4, axis=-1)
    u1, v1, u2, v2 = tf.unstack(b2, 4, axis=-1)
    w1, h1 = tf.maximum(x2 - x1, 0.0), tf.maximum(y2 - y1, 0.0)
    w2, h2 = tf.maximum(u2 - u1, 0.0), tf.maximum(v2 - v1, 0.0)
    inter_w = tf.maximum(tf.minimum(x2, u2) - tf.maximum(x1, u1), 0.0)
    inter_h = tf.maximum(tf.minimum(y2, v2) - tf.maximum(y1, v1), 0.0)
    inter = inter_w * inter_h
    union = w1 * h1 + w2 * h2 - inter
    # Where the union is empty (two zero-area boxes) IoU is 0 with a zero
    # gradient; the double `where` keeps 1/0 out of the backward pass. No
    # epsilon is added to the divisions: boxes arrive in enclosure units
    # (`_to_enclosure_units`), so the guards alone are relative.
    valid = union > EPSILON
    iou = tf.where(valid, inter / tf.where(valid, union, 1.0), 0.0)
    # Smallest enclosing box.
    cw = tf.maximum(x2, u2) - tf.minimum(x1, u1)
    ch = tf.maximum(y2, v2) - tf.minimum(y1, v1)
    return dict(
        iou=iou, union=union, cw=cw, ch=ch,
        w1=w1, h1=h1, w2=w2, h2=h2,
        dx=(u1 + u2 - x1 - x2) / 2, dy=(v1 + v2 - y1 - y2) / 2,
    )


def _aspect_angle(w, h):
    """`atan(w / h)`, 0 with a zero gradient for a box of no width or height."""
    ok = (w > EPSILON) & (h > EPSILON)
    return tf.where(ok, tf.atan(w / tf.where(ok, h, 1.0)), 0.0)


def ciou_aspect_term(w1, h1, w2, h2):
    """`v = 4 / pi^2 * (atan(w2 / h2) - atan(w1 / h1))^2` of the CIoU paper."""
    return (4.0 / math.pi**2) * tf.square(
        _aspect_angle(w2, h2) - _aspect_angle(w1, h1)
    )


def _iou_variant(b1, b2, variant, diou_exponent=1.0):
    t = _overlap_terms(b1, b2)
    iou = t["iou"]
    if variant == "iou":
        return iou
    if variant == "giou":
        enclose = t["cw"] * t["ch"]
        ok = enclose > EPSILON
        empty = (enclose - t["union"]) / tf.where(ok, enclose, 1.0)
        return iou - tf.where(ok, empty, 0.0)
    # Squared distance between centres over squared diagonal of the enclosure.
    rho2 = tf.square(t["dx"]) + tf.square(t["dy"])
    c2 = tf.square(t["cw"]) + tf.square(t["ch"])
    ok = c2 > EPSILON
    ratio = tf.where(ok, rho2 / tf.where(ok, c2, 1.0), 0.0)
    if diou_exponent != 1.0:
        ratio = tf.where(ok, tf.pow(ratio, diou_exponent), 0.0)
    diou = iou - ratio
    if variant == "diou":
        return diou
    v = ciou_aspect_term(t["w1"], t["h1"], t["w2"], t["h2"])
    # alpha is a constant in the gradient (CIoU paper, section 3.2).
    alpha = tf.stop_gradient(v / (v - iou + (1.0 + EPSILON)))  # 1 - iou + v >= 0
    return diou - alpha * v


def iou(boxes1, boxes2, bounding_box_format, variant="ciou", pairwise=False,
        image_shape=None, convention="stable", eps=EPSILON,
        diou_exponent=1.0):
    """Intersection over union and its generalised, distance and complete forms.

    With A, B the two boxes, C their smallest enclosing box, rho the distance
    between their centres, c the diagonal of C:

        IoU  = |A ∩ B| / |A ∪ B|
        GIoU = IoU - |C \\ (A ∪ B)| / |C|
        DIoU = IoU - (rho² / c²)^diou_exponent
        CIoU = DIoU - alpha v,   v = 4/pi² (atan(w_B/h_B) - atan(w_A/h_A))²,
                                 alpha = v / ((1 - IoU) + v)   (no gradient)

    The references guard the divisions differently; `convention` picks one,
    so that a loss or an assigner reproduces its reference to the bit:

    * `"stable"` (default): guarded divisions in units of the enclosing box
      (scale-free; degenerate boxes give finite values and gradients),
      negative sizes count as 0.
    * `"darknet"`: darknet's `box_iou` / `box_diounms`: no epsilon, sizes as
      given (a negative width of a linear head acts as in darknet), the
      intersection is 0 when either overlap is negative, IoU is 0 where the
      union is 0, DIoU is the plain IoU where `c² = 0`. Variants `"iou"` and
      `"diou"` (darknet's DIoU-NMS: `diou_exponent=0.6`).
    * `"ultralytics"`: yolov5's `bbox_iou(..., eps=eps)`: `+ eps` on the
      union, on `c²` and on the GIoU enclosure, `alpha = v / (v - IoU + 1 +
      eps)`; corner formats clamp heights to `eps` (its `xywh=False` path);
      the CIoU aspect term floors heights at `MIN_ASPECT_HEIGHT`, where
      ultralytics divides by zero.
    * `"ultralytics8"`: ultralytics 8's `bbox_iou` (YOLOv8 and later): as
      `"ultralytics"`, but corner formats add `eps` to the heights and
      `alpha = v / (1 - IoU + v + eps)`.

    The darknet and ultralytics conventions compute in the boxes' own units
    from their own centre or corner form (`center_xywh` or `xyxy`, `rel_`
    or not; other formats are converted to corners first).

    Args:
        boxes1: `(..., 4)`, or `(..., N, 4)` when `pairwise`.
        boxes2: `(..., 4)` broadcastable against `boxes1`, or `(..., M, 4)`.
        bounding_box_format: format of both inputs. Relative and pixel
            formats give the same IoU; GIoU/DIoU/CIoU depend on the aspect
            of the units, so pass pixel boxes (or `image_shape`) when the
            image is not square.
        variant: `"iou"`, `"giou"`, `"diou"` or `"ciou"`.
        pairwise: `False` for elementwise `(...)`, `True` for every pair,
            `(..., N, M)` (leading axes broadcast, e.g. one set per image).
        image_shape: if given with a `rel_` format, boxes are measured in
            pixels of this `(height, width)`.
        convention: `"stable"`, `"darknet"`, `"ultralytics"` or
            `"ultralytics8"` (above).
        eps: the ultralytics conventions' epsilon.
        diou_exponent: power of `rho² / c²` in DIoU and CIoU (darknet's
            `beta_nms`); 1 in the papers.

    Returns:
        Tensor of `(...)` or `(..., N, M)` overlaps, in the input dtype.

    Example:
        >>> iou([[0., 0., 2., 2.]], [[1., 1., 3., 3.]], "xyxy", "iou")  # [1/7]
        >>> iou(pred, truth, "rel_center_xywh", "iou", pairwise=True,
        ...     convention="darknet")   # (B, N, 4) x (B, M, 4) -> (B, N, M)
    """
    if variant not in VARIANTS:
        raise ValueError(
            "`variant` must be 'iou', 'giou', 'diou' or 'ciou'; "
            f"got {variant!r}."
        )
    if convention not in CONVENTIONS:
        raise ValueError(
            f"`convention` must be one of {CONVENTIONS}; got {convention!r}.")
    if convention == "darknet" and variant not in ("iou", "diou"):
        raise ValueError(
            "convention='darknet' computes variant 'iou' or 'diou'; got "
            f"{variant!r}.")
    check_format(bounding_box_format)
    boxes1 = tf.convert_to_tensor(boxes1)
    boxes2 = tf.convert_to_tensor(boxes2)
    out_dtype = boxes1.dtype if boxes1.dtype.is_floating else tf.float32
    dtype = _compute_dtype(out_dtype)
    boxes1 = tf.cast(boxes1, dtype)
    boxes2 = tf.cast(boxes2, dtype)
    if convention == "stable":
        target = "xyxy"
        if bounding_box_format.startswith("rel_") and image_shape is None:
            target = "rel_xyxy"
        b1 = convert(boxes1, bounding_box_format, target, image_shape)
        b2 = convert(boxes2, bounding_box_format, target, image_shape)
        b1, b2 = _pairs(b1, b2, pairwise)
        b1, b2 = _to_enclosure_units(b1, b2)
        overlap = _iou_variant(b1, b2, variant, diou_exponent)
    else:
        fmt = bounding_box_format
        if fmt.startswith("rel_") and image_shape is not None:
            fmt = fmt[4:]
            boxes1 = convert(boxes1, bounding_box_format, fmt, image_shape)
            boxes2 = convert(boxes2, bounding_box_format, fmt, image_shape)
        centre = fmt.endswith("center_xywh")
        if not centre and not fmt.endswith("xyxy"):
            corner = "rel_xyxy" if fmt.startswith("rel_") else "xyxy"
            boxes1 = convert(boxes1, fmt, corner)
            boxes2 = convert(boxes2, fmt, corner)
        b1, b2 = _pairs(boxes1, boxes2, pairwise)
        if convention == "darknet":
            overlap = _darknet(b1, b2, centre, variant, diou_exponent)
        else:
            overlap = _ultralytics(b1, b2, centre, variant, eps,
                                   diou_exponent,
                                   version=8 if convention.endswith("8")
                                   else 5)
    return tf.cast(overlap, out_dtype)


def _pairs(b1, b2, pairwise):
    """Every (N, M) pair of `(..., N, 4)` and `(..., M, 4)` when `pairwise`."""
    if pairwise:
        return b1[..., :, None, :], b2[..., None, :, :]
    return b1, b2


def _divide_or_zero(numerator, denominator):
    """`numerator / denominator`, 0 with a zero gradient where it is 0."""
    nonzero = tf.not_equal(denominator, 0.0)
    return tf.where(nonzero,
                    numerator / tf.where(nonzero, denominator, 1.0), 0.0)


def _native_terms(b1, b2, centre):
    """Corners, sizes and centre offsets in a box's own arithmetic.

    Centre form: corners `c -+ s / 2` and the sizes as given (darknet's
    `overlap`, ultralytics' `xywh=True`); corner form: the corners as given
    and sizes `x2 - x1`, `y2 - y1`.
    """
    if centre:
        x1, y1, w1, h1 = tf.unstack(b1, 4, axis=-1)
        x2, y2, w2, h2 = tf.unstack(b2, 4, axis=-1)
        c1 = (x1 - w1 / 2, y1 - h1 / 2, x1 + w1 / 2, y1 + h1 / 2)
        c2 = (x2 - w2 / 2, y2 - h2 / 2, x2 + w2 / 2, y2 + h2 / 2)
        dx, dy = x1 - x2, y1 - y2
    else:
        c1 = tf.unstack(b1, 4, axis=-1)
        c2 = tf.unstack(b2, 4, axis=-1)
        w1, h1 = c1[2] - c1[0], c1[3] - c1[1]
        w2, h2 = c2[2] - c2[0], c2[3] - c2[1]
        dx = (c1[0] + c1[2] - c2[0] - c2[2]) / 2
        dy = (c1[1] + c1[3] - c2[1] - c2[3]) / 2
    ow = tf.minimum(c1[2], c2[2]) - tf.maximum(c1[0], c2[0])
    oh = tf.minimum(c1[3], c2[3]) - tf.maximum(c1[1], c2[1])
    cw = tf.maximum(c1[2], c2[2]) - tf.minimum(c1[0], c2[0])
    ch = tf.maximum(c1[3], c2[3]) - tf.minimum(c1[1], c2[1])
    return dict(c1=c1, c2=c2, w1=w1, h1=h1, w2=w2, h2=h2, dx=dx, dy=dy,
                ow=ow, oh=oh, cw=cw, ch=ch)


def _darknet(b1, b2, centre, variant, diou_exponent):
    t = _native_terms(b1, b2, centre)
    inter = tf.maximum(t["ow"], 0.0) * tf.maximum(t["oh"], 0.0)
    union = t["w1"] * t["h1"] + t["w2"] * t["h2"] - inter
    overlap = _divide_or_zero(inter, union)
    if variant == "iou":
        return overlap
    c2 = t["cw"] * t["cw"] + t["ch"] * t["ch"]
    rho2 = tf.square(t["dx"]) + tf.square(t["dy"])
    ratio = _divide_or_zero(rho2, c2)
    if diou_exponent != 1.0:
        ratio = tf.where(c2 > 0, tf.pow(ratio, diou_exponent), 0.0)
    return overlap - ratio


# Heights are floored at this in the ultralytics CIoU aspect term only:
# ultralytics' `atan(w / h)` gives NaN for h = 0 (a raw t_h below -50).
MIN_ASPECT_HEIGHT = 1e-12


def _ultralytics(b1, b2, centre, variant, eps, diou_exponent, version):
    """yolov5 7.0 (`version=5`) or ultralytics 8 `bbox_iou`, term by term in
    its own order (`x**2` there is `pow`, in 8 `tf.square`)."""
    t = _native_terms(b1, b2, centre)
    h1, h2 = t["h1"], t["h2"]
    square = tf.square if version == 8 else (lambda x: x**2)
    if not centre:  # bbox_iou(xywh=False)
        if version == 8:  # `b1_y2 - b1_y1 + eps`
            h1, h2 = h1 + eps, h2 + eps
        else:  # `(b1_y2 - b1_y1).clamp(eps)`
            h1, h2 = tf.maximum(h1, eps), tf.maximum(h2, eps)
    inter = tf.maximum(t["ow"], 0.0) * tf.maximum(t["oh"], 0.0)
    union = t["w1"] * h1 + t["w2"] * h2 - inter + eps
    overlap = inter / union
    if variant == "iou":
        return overlap
    cw, ch = t["cw"], t["ch"]
    if variant == "giou":
        c_area = cw * ch + eps
        return overlap - (c_area - union) / c_area
    (a1, a2, a3, a4), (u1, u2, u3, u4) = t["c1"], t["c2"]
    diagonal2 = square(cw) + square(ch) + eps
    rho2 = (square(u1 + u3 - a1 - a3) + square(u2 + u4 - a2 - a4)) / 4
    ratio = rho2 / diagonal2
    if diou_exponent != 1.0:
        ratio = tf.pow(ratio, diou_exponent)
    if variant == "diou":
        return overlap - ratio
    v = (4 / math.pi**2) * tf.square(
        tf.atan(t["w2"] / tf.maximum(h2, MIN_ASPECT_HEIGHT))
        - tf.atan(t["w1"] / tf.maximum(h1, MIN_ASPECT_HEIGHT)))
    if version == 8:
        alpha = tf.stop_gradient(v / (1 - overlap + v + eps))
    else:
        alpha = tf.stop_gradient(v / (v - overlap + (1 + eps)))
    return overlap - (ratio + v * alpha)


def _to_enclosure_units(b1, b2):
    """Both corner boxes measured from their enclosure's top-left corner in
    units of its larger side.

    Every IoU variant is invariant to translation and scale, so this changes
    no value; it makes EPSILON relative, so two-pixel boxes in `rel_` formats
    or sub-pixel boxes keep their IoU. The origin and unit are constants of
    the gradient, which is then exactly the gradient in the input's units.
    """
    lo = tf.minimum(b1[..., :2], b2[..., :2])
    hi = tf.maximum(b1[..., 2:], b2[..., 2:])
    extent = tf.reduce_max(hi - lo, axis=-1, keepdims=True)
    finite = tf.math.is_finite(extent) & (extent > 0)
    unit = tf.stop_gradient(tf.where(finite, extent, tf.ones_like(extent)))
    origin = tf.stop_gradient(tf.where(tf.math.is_finite(lo), lo, tf.zeros_like(lo)))
    origin = tf.concat([origin, origin], axis=-1)
    return (b1 - origin) / unit, (b2 - origin) / unit
