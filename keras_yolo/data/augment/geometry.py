"""Random affine / perspective warps and flips of an image with its boxes.

The transform is ultralytics yolov5's `random_perspective`
(`utils/augmentations.py`): with `C` moving the canvas centre to the origin,

    M = T · Sh · R · P · C

`P` a random perspective (`±perspective`), `R` a rotation by `±degrees` with a
scale `1 ± scale`, `Sh` a shear of `±shear` degrees on each axis and `T` a
translation to `(0.5 ± translate) × output size`. The image is warped with
bilinear interpolation and grey (114) fill; each box becomes the envelope of
its four transformed corners, clipped to the output, and is kept only when
`box_candidates` accepts it (not too small, too thin, nor mostly lost).

Keras 3.15's `RandomFlip(bounding_box_format=...)` flips boxes correctly
(tests/test_data_augment.py checks it against ours), but it draws from a
stateful seed generator; the flips here are stateless per element so the
pipeline is reproducible under parallel `tf.data` maps.

Boxes here are `xyxy` pixels with padded rows: every function takes and
returns fixed-size `(N, 4)` boxes with `(N,)` int32 labels, and a dropped box
gets the label -1, so the functions vectorize and run inside `tf.data`.
"""

import math

import tensorflow as tf

FILL_VALUE = 114  # ultralytics' grey for borders and letterbox padding

# Positions in the vector of uniform draws of `random_perspective_matrix`.
_PERSPECTIVE_X, _PERSPECTIVE_Y, _ANGLE, _SCALE, _SHEAR_X, _SHEAR_Y, \
    _TRANSLATE_X, _TRANSLATE_Y = range(8)
NUM_PERSPECTIVE_DRAWS = 8


def box_candidates(box1, box2, wh_thr=2.0, ar_thr=100.0, area_thr=0.1,
                   eps=1e-16):
    """ultralytics' rule for keeping a box after augmentation.

    keep = w2 > wh_thr & h2 > wh_thr & w2 h2 / (w1 h1 + eps) > area_thr
           & max(w2 / (h2 + eps), h2 / (w2 + eps)) < ar_thr

    Args:
        box1: `(..., 4)` `xyxy` boxes before the augmentation, in the pixels
            of the augmented image (ultralytics multiplies them by the scale).
        box2: `(..., 4)` the same boxes after it.
        wh_thr: minimum width and height in pixels.
        ar_thr: maximum aspect ratio.
        area_thr: minimum fraction of the area kept.

    Returns:
        `(...)` bool.

    Example:
        >>> box_candidates([[0., 0., 10., 10.]], [[0., 0., 10., 1.]])  # too thin
        <tf.Tensor: shape=(1,), dtype=bool, numpy=array([False])>
    """
    box1 = tf.convert_to_tensor(box1, tf.float32)
    box2 = tf.convert_to_tensor(box2, tf.float32)
    w1 = box1[..., 2] - box1[..., 0]
    h1 = box1[..., 3] - box1[..., 1]
    w2 = box2[..., 2] - box2[..., 0]
    h2 = box2[..., 3] - box2[..., 1]
    aspect = tf.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return ((w2 > wh_thr) & (h2 > wh_thr)
            & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr))


def perspective_matrix(canvas_size, output_size, draws, degrees=0.0,
                       translate=0.1, scale=0.5, shear=0.0, perspective=0.0):
    """The 3x3 matrix of `random_perspective` from uniform draws in [0, 1).

    Args:
        canvas_size: `(height, width)` of the input image.
        output_size: `(height, width)` of the output (input + 2 × border).
        draws: `(8,)` uniforms in [0, 1): perspective x, y, angle, scale,
            shear x, shear y, translation x, y.
        degrees, translate, scale, shear, perspective: ultralytics' ranges.

    Returns:
        `(M, s)`: float64 `(3, 3)` mapping input pixels to output pixels, and
        the scale `s` (for `box_candidates`).
    """
    draws = tf.cast(draws, tf.float64)
    degrees, translate, scale, shear, perspective = (
        tf.cast(v, tf.float64)  # floats or tf.Variables
        for v in (degrees, translate, scale, shear, perspective))
    canvas = tf.cast(canvas_size, tf.float64)
    output = tf.cast(output_size, tf.float64)

    def uniform(index, low, high):
        return low + (high - low) * draws[index]

    zero, one = tf.constant(0.0, tf.float64), tf.constant(1.0, tf.float64)
    center = tf.stack([[one, zero, -canvas[1] / 2],
                       [zero, one, -canvas[0] / 2],
                       [zero, zero, one]])
    px = uniform(_PERSPECTIVE_X, -perspective, perspective)
    py = uniform(_PERSPECTIVE_Y, -perspective, perspective)
    persp = tf.stack([[one, zero, zero], [zero, one, zero], [px, py, one]])
    angle = uniform(_ANGLE, -degrees, degrees) * math.pi / 180
    s = uniform(_SCALE, 1 - scale, 1 + scale)
    # cv2.getRotationMatrix2D(center=(0, 0), angle, scale): counter-clockwise
    # on screen (y down), so the sine enters with +/- as below.
    alpha, beta = s * tf.cos(angle), s * tf.sin(angle)
    rotation = tf.stack([[alpha, beta, zero], [-beta, alpha, zero],
                         [zero, zero, one]])
    shx = tf.tan(uniform(_SHEAR_X, -shear, shear) * math.pi / 180)
    shy = tf.tan(uniform(_SHEAR_Y, -shear, shear) * math.pi / 180)
    shearing = tf.stack([[one, shx, zero], [shy, one, zero],
                         [zero, zero, one]])
    tx = uniform(_TRANSLATE_X, 0.5 - translate, 0.5 + translate) * output[1]
    ty = uniform(_TRANSLATE_Y, 0.5 - translate, 0.5 + translate) * output[0]
    translation = tf.stack([[one, zero, tx], [zero, one, ty],
                            [zero, zero, one]])
    matrix = translation @ shearing @ rotation @ persp @ center
    return matrix, tf.cast(s, tf.float32)


def warp_image(image, matrix, output_size, fill_value=FILL_VALUE,
               axis_aligned=False):
    """Warps `image` by `matrix` (input -> output pixels), like cv2.warpPerspective.

    Args:
        image: `(H, W, C)` uint8 or float.
        matrix: `(3, 3)` from input pixel coordinates to output ones.
        output_size: `(height, width)`.
        axis_aligned: the caller knows `matrix` only scales and translates;
            then the image is sampled with `tf.image.crop_and_resize` at the
            same positions, several times faster than the projective op.

    Returns:
        `(height, width, C)`, same dtype, bilinear, `fill_value` outside.
    """
    inverse = tf.linalg.inv(tf.cast(matrix, tf.float64))
    inverse = inverse / inverse[2, 2]
    dtype = image.dtype
    if axis_aligned:
        # Output pixel i samples input a i + b on each axis; crop_and_resize
        # samples y1 (H - 1) + i (y2 - y1) (H - 1) / (h - 1). A one-pixel
        # fill border makes the edge pixels blend with the fill, as cv2 does.
        padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]],
                        constant_values=tf.cast(fill_value, dtype))
        size = tf.cast(tf.shape(padded)[:2], tf.float64) - 1.0
        out = tf.cast(output_size, tf.float64) - 1.0
        start = tf.stack([inverse[1, 2], inverse[0, 2]]) + 1.0
        end = start + tf.stack([inverse[1, 1], inverse[0, 0]]) * out
        box = tf.concat([start / size, end / size], 0)
        warped = tf.image.crop_and_resize(
            padded[None], tf.cast(box, tf.float32)[None], [0],
            tf.cast(output_size, tf.int32),
            extrapolation_value=float(fill_value))[0]
    else:
        transform = tf.cast(tf.reshape(inverse, [9])[:8], tf.float32)[None]
        warped = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(image, tf.float32)[None], transforms=transform,
            output_shape=tf.cast(output_size, tf.int32),
            fill_value=tf.cast(fill_value, tf.float32),
            interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    if dtype == tf.uint8:
        # Bilinear blends of uint8 values (and the fill) stay in [0, 255]
        # up to float rounding, which tf.round absorbs: no clip pass.
        return tf.cast(tf.round(warped), tf.uint8)
    return tf.cast(warped, dtype)


def transform_boxes(boxes, matrix, output_size):
    """Envelope of the four transformed corners of each box, clipped.

    Args:
        boxes: `(N, 4)` `xyxy` pixels of the input.
        matrix: `(3, 3)` input -> output pixels (affine or perspective).
        output_size: `(height, width)` to clip to.

    Returns:
        `(N, 4)` float32 `xyxy` pixels of the output.
    """
    boxes = tf.cast(boxes, tf.float64)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    xs = tf.stack([x1, x2, x1, x2], axis=-1)  # corners x1y1, x2y2, x1y2, x2y1
    ys = tf.stack([y1, y2, y2, y1], axis=-1)
    m = tf.cast(matrix, tf.float64)
    w = m[2, 0] * xs + m[2, 1] * ys + m[2, 2]
    tx = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) / w
    ty = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) / w
    height = tf.cast(output_size[0], tf.float64)
    width = tf.cast(output_size[1], tf.float64)
    new = tf.stack([
        tf.clip_by_value(tf.reduce_min(tx, -1), 0, width),
        tf.clip_by_value(tf.reduce_min(ty, -1), 0, height),
        tf.clip_by_value(tf.reduce_max(tx, -1), 0, width),
        tf.clip_by_value(tf.reduce_max(ty, -1), 0, height)], axis=-1)
    return tf.cast(new, tf.float32)


def random_perspective(image, boxes, labels, seed, degrees=0.0, translate=0.1,
                       scale=0.5, shear=0.0, perspective=0.0, border=(0, 0),
                       fill_value=FILL_VALUE):
    """ultralytics' `random_perspective` on one image, stateless.

    Args:
        image: `(H, W, 3)` uint8.
        boxes: `(N, 4)` float32 `xyxy` pixels of `image`.
        labels: `(N,)` int32, negative = padding.
        seed: `(2,)` int32 stateless seed.
        degrees, translate, scale, shear, perspective: the ranges (ultralytics'
            hyperparameter names).
        border: `(y, x)` pixels added on each side: the output is
            `(H + 2 border_y, W + 2 border_x)`; the mosaic uses `-S / 2`.

    Returns:
        `(image, boxes, labels)`: the warped image, boxes clipped to it, and
        labels with -1 for the boxes `box_candidates` rejects.

    Example:
        >>> image, boxes, labels = random_perspective(
        ...     image, boxes, labels, seed=(0, 1), scale=0.5, translate=0.1)
    """
    draws = tf.random.stateless_uniform([NUM_PERSPECTIVE_DRAWS], seed)
    return apply_perspective(image, boxes, labels, draws, degrees, translate,
                             scale, shear, perspective, border, fill_value)


def apply_perspective(image, boxes, labels, draws, degrees=0.0, translate=0.1,
                      scale=0.5, shear=0.0, perspective=0.0, border=(0, 0),
                      fill_value=FILL_VALUE):
    """`random_perspective` with given draws (`(8,)` uniforms in [0, 1), in
    the order ultralytics calls `random.uniform`; see `perspective_matrix`)."""
    canvas = tf.shape(image)[:2]
    output = canvas + 2 * tf.cast(border, tf.int32)
    matrix, s = perspective_matrix(canvas, output, draws, degrees, translate,
                                   scale, shear, perspective)
    # Known at trace time: no rotation, shear nor perspective (the default).
    axis_aligned = all(isinstance(v, (int, float)) and v == 0
                       for v in (degrees, shear, perspective))
    warped = warp_image(image, matrix, output, fill_value, axis_aligned)
    new = transform_boxes(boxes, matrix, output)
    keep = box_candidates(tf.cast(boxes, tf.float32) * s, new)
    labels = tf.where(keep & (labels >= 0), labels, -1)
    return warped, new, labels


def flip_left_right(image, boxes):
    """Mirrors `(H, W, C)` image and its `(N, 4)` `xyxy` pixel boxes."""
    width = tf.cast(tf.shape(image)[1], boxes.dtype)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return (tf.reverse(image, [1]),
            tf.stack([width - x2, y1, width - x1, y2], axis=-1))


def flip_up_down(image, boxes):
    """Flips `(H, W, C)` image and its `(N, 4)` `xyxy` pixel boxes vertically."""
    height = tf.cast(tf.shape(image)[0], boxes.dtype)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return (tf.reverse(image, [0]),
            tf.stack([x1, height - y2, x2, height - y1], axis=-1))


def random_flip(image, boxes, seed, fliplr=0.5, flipud=0.0):
    """Flips left-right with probability `fliplr` and up-down with `flipud`.

    Args:
        image: `(H, W, C)`; boxes: `(N, 4)` `xyxy` pixels; seed: `(2,)` int32.

    Returns:
        `(image, boxes)`.
    """
    draws = tf.random.stateless_uniform([2], seed)
    image, boxes = tf.cond(draws[0] < flipud,
                           lambda: flip_up_down(image, boxes),
                           lambda: (image, boxes))
    return tf.cond(draws[1] < fliplr, lambda: flip_left_right(image, boxes),
                   lambda: (image, boxes))


def resize_long_side(image, boxes, size):
    """Resizes so the longer side is `size` (ultralytics' `load_image`).

    The new sides are `ceil(side × size / longer side)`, bilinear (as
    cv2.INTER_LINEAR); boxes scale with the image.

    Args:
        image: `(H, W, 3)` uint8; boxes: `(N, 4)` `xyxy` pixels; size: int.

    Returns:
        `(image uint8 (h, w, 3), boxes)`.
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    ratio = tf.cast(size, tf.float32) / tf.reduce_max(shape)
    new = tf.cast(tf.math.ceil(shape * ratio - 1e-3), tf.int32)

    def resize():
        resized = tf.image.resize(image, new, method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    # Already sized (e.g. a cache of resized images): skip, as ultralytics.
    resized = tf.cond(tf.equal(ratio, 1.0), lambda: tf.cast(image, tf.uint8),
                      resize)
    factor = tf.cast(new, tf.float32) / shape
    scaled = tf.cast(boxes, tf.float32) * tf.stack(
        [factor[1], factor[0], factor[1], factor[0]])
    return resized, scaled
