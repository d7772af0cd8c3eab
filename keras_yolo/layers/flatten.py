"""Flattening a level's `(B, H, W, A, ...)` grid into `(B, H * W * A, ...)`."""

import tensorflow as tf


def flatten_cells(x):
    """`(B, H, W, A, *rest)` -> `(B, H * W * A, *rest)`.

    The middle size stays static whenever H, W and A are, even when the
    batch size is not, so NMS and export see a fixed number of candidates.
    """
    h, w, a = x.shape[1], x.shape[2], x.shape[3]
    n = h * w * a if None not in (h, w, a) else -1
    rest = x.shape[4:]
    if None in rest:
        raise ValueError(f"the trailing sizes must be static; got {x.shape}.")
    return tf.reshape(x, [tf.shape(x)[0], n, *rest])
