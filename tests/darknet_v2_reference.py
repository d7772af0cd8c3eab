"""pjreddie darknet's [region] layer (YOLOv2), run through libdarknet.

Compiles `tests/darknet/region_harness.c` with gcc against Debian's
`darknet` package (`libdarknet.so`, `darknet.h`), caching the binary by the
hash of its source in the temp directory, and runs the layer's forward pass on
given raw outputs and truths. Import fails (so `require_peer` skips locally
and fails in CI) when the library, its header or gcc is missing.

Layouts: keras-yolo's raw output is `(B, H, W, A, 5 + C)`; darknet's is
`(B, A, 5 + C, H, W)` (entry_index in region_layer.c). Truths go in darknet's
way: `(x, y, w, h, class)` relative to the image, at most 30 per image
(hard-coded in region_layer.c), the list of an image ending at the first
row whose x is 0.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS_SOURCE = os.path.join(HERE, "darknet", "region_harness.c")
# Debian puts the header beside the library, not in /usr/include.
HEADER_DIRS = ("/usr/lib/darknet/include", "/usr/include", "/usr/local/include")
LIBRARY_DIRS = ("/usr/lib/darknet", "/usr/lib/x86_64-linux-gnu", "/usr/lib",
                "/usr/local/lib")
MAX_TRUTHS = 30  # region_layer.c reads 30 truths per image
PRIOR_IMAGES = 12800  # region_layer.c: anchor prior term while seen < 12800


def _find(dirs, name):
    for directory in dirs:
        if os.path.exists(os.path.join(directory, name)):
            return directory
    raise ImportError(f"{name} not found in {dirs}: install Debian's `darknet`")


HEADER_DIR = _find(HEADER_DIRS, "darknet.h")
LIBRARY_DIR = _find(LIBRARY_DIRS, "libdarknet.so")
GCC = shutil.which("gcc")
if GCC is None:
    raise ImportError("gcc not found: needed to build the darknet harness")


def harness_binary():
    """Path of the compiled harness, built once per source version."""
    with open(HARNESS_SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    directory = os.path.join(tempfile.gettempdir(), "keras_yolo_darknet")
    os.makedirs(directory, exist_ok=True)
    binary = os.path.join(directory, f"region_harness_{digest}")
    if not os.path.exists(binary):
        partial = f"{binary}.{os.getpid()}"
        subprocess.run(
            [GCC, "-O2", "-o", partial, HARNESS_SOURCE, f"-I{HEADER_DIR}",
             f"-L{LIBRARY_DIR}", "-ldarknet", f"-Wl,-rpath,{LIBRARY_DIR}",
             "-lm"],
            check=True, capture_output=True,
        )
        os.replace(partial, binary)  # atomic: parallel test runs are safe
    return binary


def logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def region_forward(raw, truths, anchors, *, seen=0, thresh=0.6,
                   coord_scale=1.0, object_scale=5.0, noobject_scale=1.0,
                   class_scale=1.0, rescore=True, bias_match=True):
    """Runs darknet's `forward_region_layer` in training mode.

    Args:
        raw: `(B, H, W, A, 5 + C)` raw head output (keras-yolo layout).
        truths: `(B, T, 5)` rows `(x, y, w, h, class)` relative to the image,
            `T <= 30`; unused rows all zero.
        anchors: `(A, 2)` anchor `(w, h)` in grid cells (darknet `biases`).
        seen: value of `*net.seen` during the forward pass (darknet increments
            it by the batch size before the forward pass).
        the rest: the `[region]` cfg options of the same names.

    Returns:
        dict of numpy float64 arrays in keras-yolo layout `(B, H, W, A, 5+C)`:
        `output` (darknet's activated output), `delta` (the layer's delta),
        `gradient` (delta times the logistic derivative for x, y and
        objectness, as `backward_region_layer_gpu` applies it: darknet's CPU
        `backward_region_layer` is empty), and the scalar `cost`.
    """
    raw = np.asarray(raw, np.float32)
    batch, height, width, num_anchors, depth = raw.shape
    classes = depth - 5
    truths = np.asarray(truths, np.float32)
    if truths.shape[1] > MAX_TRUTHS:
        raise ValueError(f"darknet's [region] reads at most {MAX_TRUTHS} truths")
    padded = np.zeros((batch, MAX_TRUTHS, 5), np.float32)
    padded[:, :truths.shape[1]] = truths
    header = np.array([batch, width, height, num_anchors, classes, seen,
                       int(rescore), int(bias_match)], np.int32)
    params = np.array([thresh, coord_scale, object_scale, noobject_scale,
                       class_scale], np.float32)
    darknet_input = raw.transpose(0, 3, 4, 1, 2)  # (B, A, 5+C, H, W)
    with tempfile.TemporaryDirectory() as tmp:
        in_path, out_path = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        with open(in_path, "wb") as f:
            for array in (header, params, np.asarray(anchors, np.float32),
                          darknet_input, padded):
                f.write(np.ascontiguousarray(array).tobytes())
        subprocess.run([harness_binary(), in_path, out_path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = np.fromfile(out_path, np.float32)
    size = raw.size
    shape = (batch, num_anchors, depth, height, width)

    def to_keras_layout(flat):
        return flat.reshape(shape).transpose(0, 3, 4, 1, 2).astype(np.float64)

    output = to_keras_layout(result[:size])
    delta = to_keras_layout(result[size:2 * size])
    gradient = delta.copy()
    # backward_region_layer_gpu: gradient_array(LOGISTIC) on x, y and objectness.
    for entry in (0, 1, 4):
        out = output[..., entry]
        gradient[..., entry] *= out * (1.0 - out)
    return {"output": output, "delta": delta, "gradient": gradient,
            "cost": float(result[2 * size])}
