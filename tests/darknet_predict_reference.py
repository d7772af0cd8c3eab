"""pjreddie darknet (Debian's libdarknet) as the reference of the weights import.

Compiles tests/darknet/predict_harness.c against libdarknet once per source
hash (cached under $XDG_CACHE_HOME/keras_yolo or ~/.cache/keras_yolo) and runs it:

- `random_weights(cfg, seed, out)`: darknet builds the cfg's network, fills
  it with random values and writes them with its own `save_weights`.
- `predict(cfg, weights, images, mode)`: `parse_network_cfg` + `load_weights`
  + `network_predict` per image; returns, per dumped layer, darknet's tensor as
  NHWC `(N, H, W, C)` (`mode="heads"`: the inputs of [detection] / [region] /
  [yolo] layers, i.e. the raw values; `mode="all"`: every layer's output;
  `mode="boxes"`: `get_network_boxes` at threshold 0, `(N, boxes, 5 + C)` rows
  `[x, y, w, h, objectness, objectness * p(class)...]`, fractions of the image).

Importing this module fails when libdarknet or gcc is missing, so tests load it
with `require_peer("darknet_predict_reference")`.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "darknet", "predict_harness.c")
DARKNET_DIR = "/usr/lib/darknet"
INCLUDE_DIRS = ("/usr/include", os.path.join(DARKNET_DIR, "include"))
LIBRARY = os.path.join(DARKNET_DIR, "libdarknet.so")

# darknet.h LAYER_TYPE values of the heads.
LAYER_TYPES = {5: "detection", 22: "region", 23: "yolo"}


def _include_dir():
    for directory in INCLUDE_DIRS:
        if os.path.exists(os.path.join(directory, "darknet.h")):
            return directory
    raise ImportError(f"darknet.h not found in {INCLUDE_DIRS} (apt-get install darknet)")


def _build():
    if not os.path.exists(LIBRARY):
        raise ImportError(f"{LIBRARY} missing (apt-get install darknet)")
    if shutil.which("gcc") is None:
        raise ImportError("gcc missing")
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                         "keras_yolo")
    binary = os.path.join(cache, f"predict_harness_{digest}")
    if not os.path.exists(binary):
        os.makedirs(cache, exist_ok=True)
        partial = f"{binary}.{os.getpid()}"
        subprocess.run(["gcc", "-O2", "-I", _include_dir(), SOURCE, "-L", DARKNET_DIR,
                        "-ldarknet", f"-Wl,-rpath,{DARKNET_DIR}", "-lm", "-o", partial],
                       check=True, capture_output=True)
        os.replace(partial, binary)
    return binary


HARNESS = _build()


def _run(args):
    result = subprocess.run([HARNESS, *args], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"predict_harness {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def random_weights(cfg_path, seed, weights_path):
    """darknet's own random weights for `cfg_path`, saved with `save_weights`."""
    _run(["randomize", cfg_path, str(int(seed)), weights_path])
    return weights_path


def predict(cfg_path, weights_path, images, mode="heads"):
    """Runs darknet on `images` (N, H, W, C) float32 and returns its tensors.

    Returns:
        A list of dicts `{"index", "type", "output"}`, `output` `(N, H, W, C)`
        float32 (darknet's (C, H, W) per image, transposed).
    """
    images = np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2))
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "in.bin")
        target = os.path.join(tmp, "out.bin")
        with open(source, "wb") as f:
            np.asarray(images.shape, "<i4").tofile(f)
            images.astype("<f4").tofile(f)
        listing = _run(["predict", cfg_path, weights_path, source, target, mode])
        values = np.fromfile(target, "<f4")
    rows = [tuple(int(v) for v in line.split()) for line in listing.splitlines() if line]
    per_image = sum(row[5] for row in rows)
    if values.size != per_image * len(images):
        raise RuntimeError(f"predict_harness wrote {values.size} floats, "
                           f"expected {per_image * len(images)}")
    values = values.reshape(len(images), per_image)
    tensors, start = [], 0
    for index, layer_type, c, h, w, size in rows:
        block = values[:, start:start + size]
        start += size
        if layer_type == -1:  # "boxes": (N, boxes, 4 + 1 + classes)
            block = block.reshape(len(images), h, c)
        elif c * h * w == size:
            block = block.reshape(-1, c, h, w).transpose(0, 2, 3, 1)
        tensors.append({"index": index, "type": LAYER_TYPES.get(layer_type, layer_type),
                        "output": np.ascontiguousarray(block)})
    return tensors
