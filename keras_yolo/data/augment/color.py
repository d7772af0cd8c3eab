"""HSV jitter, as ultralytics yolov5's `augment_hsv`.

Three gains `g = 1 + U(-1, 1) x (hsv_h, hsv_s, hsv_v)` multiply hue,
saturation and value; the hue wraps around (OpenCV's `(H x g) mod 180` on its
0-180 scale, here `(h x g) mod 1`), saturation and value are clipped. The
boxes do not change.

Speed: TF's `rgb_to_hsv` kernel alone took ~45 ms per 640 x 640 image on the
2-core benchmark machine (more than half of the augmentation pipeline), and
the unfused ops pass over the image about ten times. The same ops compiled
with XLA (one fused loop per pixel, also inside `tf.data` maps) run about
6x faster; the result equals the unfused ops' except for float rounding at
a .5 boundary (about 3 values in a million differ by one level;
tests/test_data_augment.py checks it on all 2^24 RGB colours).
"""

import tensorflow as tf


def adjust_hsv(image, gains):
    """Multiplies hue (wrapping), saturation and value by `gains`.

    Args:
        image: `(..., H, W, 3)` uint8 RGB.
        gains: `(3,)` or `(..., 1, 1, 3)` broadcastable: hue, sat, value gains.

    Returns:
        uint8 image of the same shape.

    Example:
        >>> adjust_hsv(image, [1.0, 1.2, 0.8])  # 20% more saturated, darker
    """
    image = tf.convert_to_tensor(image)
    gains = tf.cast(gains, tf.float32)
    if gains.shape.rank == 1:
        gains = tf.reshape(gains, [1] * (image.shape.rank - 1) + [3])
    return _fused_adjust_hsv(image, gains)


def adjust_hsv_unfused(image, gains):
    """`adjust_hsv` op by op, without XLA (the reference it is tested
    against; same arguments). `gains` of the image's rank."""
    hsv = tf.image.rgb_to_hsv(tf.cast(image, tf.float32) / 255.0)
    gains = tf.broadcast_to(tf.cast(gains, tf.float32), tf.shape(hsv))
    hue = tf.math.floormod(hsv[..., 0] * gains[..., 0], 1.0)
    sat = tf.clip_by_value(hsv[..., 1] * gains[..., 1], 0.0, 1.0)
    val = tf.clip_by_value(hsv[..., 2] * gains[..., 2], 0.0, 1.0)
    rgb = tf.image.hsv_to_rgb(tf.stack([hue, sat, val], axis=-1))
    return tf.cast(tf.clip_by_value(tf.round(rgb * 255.0), 0, 255), tf.uint8)


_fused_adjust_hsv = tf.function(adjust_hsv_unfused, jit_compile=True,
                                reduce_retracing=True)


def hsv_gains(draws, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4):
    """Gains `1 + (2u - 1) x (hsv_h, hsv_s, hsv_v)` from `(..., 3)` uniforms."""
    spread = tf.stack([tf.cast(v, tf.float32) for v in (hsv_h, hsv_s, hsv_v)])
    return 1.0 + (2.0 * tf.cast(draws, tf.float32) - 1.0) * spread


def random_hsv(image, seed, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4):
    """`adjust_hsv` with ultralytics' random gains, stateless.

    Args:
        image: `(H, W, 3)` uint8; seed: `(2,)` int32.

    Returns:
        uint8 `(H, W, 3)`.
    """
    draws = tf.random.stateless_uniform([3], seed)
    return adjust_hsv(image, hsv_gains(draws, hsv_h, hsv_s, hsv_v))
