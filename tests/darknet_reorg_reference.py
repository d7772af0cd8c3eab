"""darknet's reorg, the reference both the Reorg layer and the cfg import are checked against."""

import numpy as np


def reorg_cpu(x, w, h, c, batch, stride, forward):
    """darknet src/blas.c reorg_cpu, transcribed loop for loop (flat buffers)."""
    out = np.zeros_like(x)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2 = k % out_c
                    offset = k // out_c
                    w2 = i * stride + offset % stride
                    h2 = j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if forward:
                        out[out_index] = x[in_index]
                    else:
                        out[in_index] = x[out_index]
    return out
