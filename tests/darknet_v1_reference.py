"""pjreddie darknet's [detection] layer (YOLOv1) as a reference for tests.

Compiles `tests/darknet/detection_harness.c` against Debian's `libdarknet`
(package `darknet`, the 2018 source) once per source hash into the temp
directory, then runs the layer's training forward pass on given raw outputs
and truths and returns its `delta` and cost.

Layouts are darknet's own (see the harness): one flat vector per image,
`[S*S*C class scores][S*S*n confidences][S*S*n*4 coords]`, and per cell
`[is_obj, one-hot classes, x, y, w, h]` for the truth.
"""

import hashlib
import os
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "darknet", "detection_harness.c")
LIBRARY_DIRS = ("/usr/lib/darknet", "/usr/lib/x86_64-linux-gnu", "/usr/lib")
HEADER_DIRS = ("/usr/lib/darknet/include", "/usr/include")


def _find(dirs, name):
    for d in dirs:
        if os.path.exists(os.path.join(d, name)):
            return d
    raise FileNotFoundError(
        f"{name} not found in {dirs}; install Debian's `darknet` package."
    )


def library_path():
    """Path of libdarknet.so (raises FileNotFoundError when missing)."""
    return os.path.join(_find(LIBRARY_DIRS, "libdarknet.so"), "libdarknet.so")


def header_path():
    return os.path.join(_find(HEADER_DIRS, "darknet.h"), "darknet.h")


def build():
    """Compiles the harness (cached by source hash); returns the binary."""
    lib_dir = os.path.dirname(library_path())
    inc_dir = os.path.dirname(header_path())
    flags = ["-O1", f"-I{inc_dir}", f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}",
             "-ldarknet", "-lm"]
    with open(SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + " ".join(flags).encode()).hexdigest()
    binary = os.path.join(tempfile.gettempdir(),
                          f"keras_yolo_detection_harness_{key[:16]}")
    if not os.path.exists(binary):
        partial = f"{binary}.{os.getpid()}"
        subprocess.run(["gcc", SOURCE, "-o", partial, *flags], check=True,
                       capture_output=True)
        os.replace(partial, binary)
    return binary


def _cfg(batch, inputs, side, num, classes, coord_scale, object_scale,
         noobject_scale, class_scale, rescore, sqrt, softmax):
    return (
        f"[net]\nbatch={batch}\ninputs={inputs}\n\n"
        f"[detection]\nclasses={classes}\ncoords=4\nrescore={int(rescore)}\n"
        f"side={side}\nnum={num}\nsoftmax={int(softmax)}\nsqrt={int(sqrt)}\n"
        f"coord_scale={coord_scale!r}\nobject_scale={object_scale!r}\n"
        f"noobject_scale={noobject_scale!r}\nclass_scale={class_scale!r}\n"
    )


def detection_delta(raw, truth, side, num, classes, coord_scale=5.0,
                    object_scale=1.0, noobject_scale=0.5, class_scale=1.0,
                    rescore=True, sqrt=True, softmax=False):
    """Darknet's [detection] layer delta for a batch.

    Args:
        raw: `(batch, side*side*(5*num + classes))` raw outputs, darknet layout.
        truth: `(batch, side*side, 1 + classes + 4)` per-cell truth.
        Other arguments: the [detection] section's options (defaults of
            darknet's cfg/yolov1.cfg).

    Returns:
        `(delta (batch, inputs) float32, cost float)`.
    """
    raw = np.ascontiguousarray(raw, np.float32)
    truth = np.ascontiguousarray(truth, np.float32)
    batch, inputs = raw.shape
    if inputs != side * side * (5 * num + classes):
        raise ValueError(f"raw has {inputs} values per image, expected "
                         f"{side * side * (5 * num + classes)}")
    if truth.shape != (batch, side * side, 1 + classes + 4):
        raise ValueError(f"truth shape {truth.shape} does not match")
    binary = build()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "net.cfg")
        with open(cfg, "w") as f:
            f.write(_cfg(batch, inputs, side, num, classes, coord_scale,
                         object_scale, noobject_scale, class_scale, rescore,
                         sqrt, softmax))
        paths = [os.path.join(tmp, n) for n in ("in.f32", "truth.f32",
                                                 "delta.f32")]
        raw.tofile(paths[0])
        truth.tofile(paths[1])
        subprocess.run([binary, cfg, *paths], check=True,
                       capture_output=True)
        out = np.fromfile(paths[2], np.float32)
    return out[:-1].reshape(batch, inputs), float(out[-1])
