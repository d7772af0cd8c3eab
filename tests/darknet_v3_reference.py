"""pjreddie darknet's [yolo] layer (YOLOv3) as a reference for tests.

Compiles `tests/darknet/yolo_harness.c` against Debian's `libdarknet`
(package `darknet`, the 2018-09 source) once per source hash into the temp
directory. `yolo_deltas` builds, per level, a network of one [yolo] layer
from a cfg string (the full anchor list and that level's mask, parsed by
darknet itself), runs its training forward pass on the given raw outputs and
truths, and returns each level's `delta` in keras-yolo's layout.

Darknet's `delta` is what its backward pass adds to the previous layer's
delta: `-dL/d(raw)` of the loss darknet optimises, summed (not averaged)
over the batch.
"""

import hashlib
import os
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "darknet", "yolo_harness.c")
LIBRARY_DIRS = ("/usr/lib/darknet", "/usr/lib/x86_64-linux-gnu", "/usr/lib")
HEADER_DIRS = ("/usr/lib/darknet/include", "/usr/include")
MAX_TRUTHS = 90  # [yolo] max= default: rows of net.truth per image


def _find(dirs, name):
    for d in dirs:
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    raise FileNotFoundError(
        f"{name} not found in {dirs}; install Debian's `darknet` package."
    )


def library_path():
    """Path of libdarknet.so (raises FileNotFoundError when missing)."""
    return _find(LIBRARY_DIRS, "libdarknet.so")


def build():
    """Compiles the harness (cached by source hash); returns the binary."""
    lib_dir = os.path.dirname(library_path())
    inc_dir = os.path.dirname(_find(HEADER_DIRS, "darknet.h"))
    flags = [f"-I{inc_dir}", f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}"]
    with open(SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + " ".join(flags).encode()).hexdigest()
    binary = os.path.join(tempfile.gettempdir(),
                          f"keras_yolo_yolo_harness_{key[:16]}")
    if not os.path.exists(binary):
        partial = f"{binary}.{os.getpid()}"
        subprocess.run(["gcc", "-O1", SOURCE, *flags, "-o", partial,
                        "-ldarknet", "-lm"], check=True, capture_output=True)
        os.replace(partial, binary)
    return binary


def _cfg(batch, grid_w, grid_h, mask, anchors, classes, ignore_thresh,
         truth_thresh):
    anchor_list = ", ".join(f"{float(w)!r},{float(h)!r}" for w, h in anchors)
    return (
        f"[net]\nbatch={batch}\nwidth={grid_w}\nheight={grid_h}\n"
        f"channels={len(mask) * (5 + classes)}\n\n"
        f"[yolo]\nmask={','.join(str(int(m)) for m in mask)}\n"
        f"anchors={anchor_list}\nclasses={classes}\nnum={len(anchors)}\n"
        f"ignore_thresh={ignore_thresh!r}\ntruth_thresh={truth_thresh!r}\n"
        f"jitter=0\nrandom=0\n"
    )


def darknet_truth(boxes, labels):
    """keras-yolo ground truth -> darknet's net.truth `(B, 90 * 5)`.

    Args:
        boxes: `(B, M, 4)` `rel_center_xywh`.
        labels: `(B, M)` with -1 padding (dropped; order otherwise kept).
    """
    boxes = np.asarray(boxes, np.float32)
    labels = np.asarray(labels)
    truth = np.zeros((len(boxes), MAX_TRUTHS, 5), np.float32)
    for b in range(len(boxes)):
        keep = labels[b] >= 0
        n = int(keep.sum())
        if n > MAX_TRUTHS:
            raise ValueError(f"image {b} has {n} truths; darknet reads "
                             f"{MAX_TRUTHS}")
        truth[b, :n, :4] = boxes[b][keep]
        truth[b, :n, 4] = labels[b][keep]
    return truth.reshape(len(boxes), -1)


def yolo_deltas(raw_levels, boxes, labels, anchors, masks, strides,
                num_classes, ignore_thresh=0.5, truth_thresh=1.0):
    """Darknet's [yolo] `delta` for each level.

    Args:
        raw_levels: list of `(B, H, W, A, 5 + C)` raw outputs.
        boxes, labels: ground truth, `rel_center_xywh`, padded with label -1.
        anchors: `(total, 2)` anchors in pixels (all levels).
        masks: per level, the indices of its anchors in `anchors`.
        strides: per level, pixels per grid cell (image = grid * stride).

    Returns:
        `(outputs, deltas)`: lists of `(B, H, W, A, 5 + C)` float32, the
        layer's activated output and its delta, in keras-yolo's layout.
    """
    binary = build()
    truth = darknet_truth(boxes, labels)
    outputs, deltas = [], []
    with tempfile.TemporaryDirectory() as tmp:
        truth_path = os.path.join(tmp, "truth.f32")
        truth.tofile(truth_path)
        for level, (raw, mask, stride) in enumerate(
                zip(raw_levels, masks, strides)):
            raw = np.asarray(raw, np.float32)
            batch, grid_h, grid_w, num, entries = raw.shape
            if num != len(mask) or entries != 5 + num_classes:
                raise ValueError(f"level {level}: raw shape {raw.shape} does "
                                 f"not match mask {mask}, {num_classes} "
                                 "classes")
            cfg = os.path.join(tmp, f"level{level}.cfg")
            with open(cfg, "w") as f:
                f.write(_cfg(batch, grid_w, grid_h, mask, anchors, num_classes,
                             ignore_thresh, truth_thresh))
            in_path = os.path.join(tmp, f"in{level}.f32")
            out_path = os.path.join(tmp, f"out{level}.f32")
            # (B, H, W, A, E) -> darknet's (B, A, E, H, W).
            np.ascontiguousarray(raw.transpose(0, 3, 4, 1, 2)).tofile(in_path)
            subprocess.run(
                [binary, cfg, str(grid_w * stride), str(grid_h * stride),
                 in_path, truth_path, out_path],
                check=True, capture_output=True)
            out = np.fromfile(out_path, np.float32).reshape(
                2, batch, num, entries, grid_h, grid_w)
            out = out.transpose(0, 1, 4, 5, 2, 3)
            outputs.append(out[0])
            deltas.append(out[1])
    return outputs, deltas
