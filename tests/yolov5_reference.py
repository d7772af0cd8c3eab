"""Harness around the reference: ultralytics yolov5 7.0.14 on CPU torch.

`load()` returns the imported `yolov5` modules, or raises ImportError; tests
call it through `conftest.require_peer("yolov5_reference")` and then
`yolov5_reference.load()`.

Two repairs make the pip-installed reference usable here:

* torchvision 0.28.0 (installed with --no-deps) is a CUDA build whose `_C.so`
  cannot load beside torch 2.13.0+cpu, so `import torchvision` fails with
  "operator torchvision::nms does not exist". We define `torchvision::nms`
  (and `qnms`, whose fake kernel torchvision also registers) ourselves with
  `torch.library`, a line-by-line port of torchvision's CPU kernel
  (`torchvision/csrc/ops/cpu/nms_kernel.cpp`), then tell torchvision its ops
  are present.
* yolov5's `non_max_suppression` gives up after `0.5 + 0.05 * bs` seconds and
  leaves the remaining images empty; `reference_nms` freezes its clock.
"""

import contextlib
import os
import sys
import types

os.environ.setdefault("YOLOv5_VERBOSE", "False")

_MODULES = None


def _nms_cpu(dets, scores, iou_threshold):
    """torchvision's CPU NMS kernel: greedy, descending stable score order,
    suppress `j` when `inter / (area_i + area_j - inter) > iou_threshold`."""
    import torch

    if dets.numel() == 0:
        return torch.empty((0,), dtype=torch.long)
    x1, y1, x2, y2 = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = torch.sort(scores, stable=True, descending=True)[1]
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool)
    keep = []
    for position in range(order.numel()):
        i = int(order[position])
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[position + 1:]
        xx1 = torch.maximum(x1[i], x1[rest])
        yy1 = torch.maximum(y1[i], y1[rest])
        xx2 = torch.minimum(x2[i], x2[rest])
        yy2 = torch.minimum(y2[i], y2[rest])
        w = torch.clamp(xx2 - xx1, min=0)
        h = torch.clamp(yy2 - yy1, min=0)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[ovr > iou_threshold]] = True
    return torch.tensor(keep, dtype=torch.long)


def _define_torchvision_ops():
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - already defined
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", _nms_cpu, "CPU")

    def _qnms(dets, scores, iou_threshold):
        raise NotImplementedError("quantized NMS is not part of the shim")

    lib.impl("qnms", _qnms, "CPU")
    # Keep the library object alive for the life of the process.
    sys.modules[__name__]._TORCHVISION_LIB = lib


def load():
    """Imports torch, torchvision (shimmed) and yolov5; returns a namespace
    `torch, loss, general, yolo, metrics`."""
    global _MODULES
    if _MODULES is not None:
        return _MODULES
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    _define_torchvision_ops()
    import torchvision.extension

    torchvision.extension._has_ops = lambda: True
    import torchvision  # noqa: F401
    from yolov5.models import yolo
    from yolov5.utils import general, loss, metrics

    _MODULES = types.SimpleNamespace(torch=torch, loss=loss,
                                     general=general, yolo=yolo,
                                     metrics=metrics)
    return _MODULES


class _FrozenClock:
    """Stands in for the `time` module inside yolov5's general.py."""

    def __init__(self, real):
        self._real = real

    def time(self):
        return 0.0

    def __getattr__(self, name):
        return getattr(self._real, name)


@contextlib.contextmanager
def _frozen_nms_clock(general):
    real = general.time
    general.time = _FrozenClock(real)
    try:
        yield
    finally:
        general.time = real


def reference_nms(prediction, **kwargs):
    """yolov5's `non_max_suppression` without its time limit."""
    ref = load()
    with _frozen_nms_clock(ref.general):
        return ref.general.non_max_suppression(prediction, **kwargs)


def compute_loss(num_classes, anchors, strides, hyp, gr=1.0,
                 sort_obj_iou=False, autobalance=False):
    """A real `ComputeLoss` around a bare `Detect` head.

    Args:
        anchors: `(levels, A, 2)` in input pixels (as in the yaml).
        hyp: dict with box, obj, cls, anchor_t, cls_pw, obj_pw, fl_gamma,
            label_smoothing.
    """
    ref = load()
    torch = ref.torch
    import numpy as np

    anchors = np.asarray(anchors, np.float32)
    levels, num_anchors = anchors.shape[:2]
    detect = ref.yolo.Detect(nc=num_classes,
                             anchors=anchors.reshape(levels, -1).tolist(),
                             ch=[8] * levels)
    detect.stride = torch.tensor([float(s) for s in strides])
    # As DetectionModel.__init__ does: anchors in cells of each level.
    detect.anchors /= detect.stride.view(-1, 1, 1)

    class _Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.ModuleList([detect])

    model = _Model()
    model.hyp = dict(hyp)
    criterion = ref.loss.ComputeLoss(model, autobalance=autobalance)
    criterion.gr = gr
    criterion.sort_obj_iou = sort_obj_iou
    assert criterion.na == num_anchors
    return criterion


def default_hyp(**overrides):
    """hyp.scratch-low.yaml's loss entries, with overrides."""
    hyp = dict(box=0.05, obj=1.0, cls=0.5, anchor_t=4.0, cls_pw=1.0,
               obj_pw=1.0, fl_gamma=0.0, label_smoothing=0.0)
    hyp.update(overrides)
    return hyp


# Importing this module imports the reference, so `require_peer` sees a
# missing or broken install as an import failure.
load()
