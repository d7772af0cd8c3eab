"""HSV jitter, as ultralytics yolov5's `augment_hsv`.

Three gains `g = 1 + U(-1, 1) x (hsv_h, hsv_s, hsv_v)` multiply hue,
saturation and value; the hue wraps around (OpenCV's `(H x g) mod 180` on its
0-180 scale, here `(h x g) mod 1`), saturation and value are clipped. The
boxes do not change.
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
    hsv = tf.image.rgb_to_hsv(tf.cast(image, tf.float32) / 255.0)
    gains = tf.cast(gains, tf.float32)
    gains = tf.broadcast_to(gains, tf.shape(hsv)) if gains.shape.rank == 1 \
        else gains
    hue = tf.math.floormod(hsv[..., 0] * gains[..., 0], 1.0)
    sat = tf.clip_by_value(hsv[..., 1] * gains[..., 1], 0.0, 1.0)
    val = tf.clip_by_value(hsv[..., 2] * gains[..., 2], 0.0, 1.0)
    rgb = tf.image.hsv_to_rgb(tf.stack([hue, sat, val], axis=-1))
    return tf.cast(tf.clip_by_value(tf.round(rgb * 255.0), 0, 255), tf.uint8)


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
