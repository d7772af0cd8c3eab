"""Harness around the reference: ultralytics 8.4.190 (`ultralytics` package) on CPU torch.

`load()` returns the imported modules or raises ImportError; tests call it
through `conftest.require_peer("ultralytics8_reference")`. It builds
`v8DetectionLoss` offline around a bare `Detect` head (as ultralytics' own
tests do, with a minimal model object carrying `args`, `model[-1]` and a
parameter for the device) and converts our tensors to ultralytics' layout:

* raw levels `(B, H, W, 4 reg_max + C)` -> `{"boxes": (B, 4 reg_max, N),
  "scores": (B, C, N), "feats": [(B, c, H, W)]}` (the training-mode output
  of `Detect`);
* padded truths `(B, M, 4)` `rel_center_xywh` + labels `(B, M)` -> the
  dataloader batch `{"batch_idx", "cls", "bboxes"}` (normalised xywh).
"""

import os
import types

os.environ.setdefault("YOLO_OFFLINE", "1")

_MODULES = None


def load():
    """Imports torch and ultralytics; returns a namespace
    `torch, loss, tal, head, nms, version`."""
    global _MODULES
    if _MODULES is not None:
        return _MODULES
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    import ultralytics
    from ultralytics.nn.modules import head
    from ultralytics.utils import loss, nms, tal

    _MODULES = types.SimpleNamespace(torch=torch, loss=loss, tal=tal,
                                     head=head, nms=nms,
                                     version=ultralytics.__version__)
    return _MODULES


def detect_head(num_classes, reg_max=16, strides=(8, 16, 32)):
    """A bare `Detect` with its strides set (as DetectionModel does)."""
    ref = load()
    torch = ref.torch
    detect = ref.head.Detect(nc=num_classes, reg_max=reg_max,
                             ch=[16] * len(strides))
    detect.stride = torch.tensor([float(s) for s in strides])
    return detect


def detection_loss(num_classes, reg_max=16, strides=(8, 16, 32), box=7.5,
                   cls=0.5, dfl=1.5, tal_topk=10):
    """A real `v8DetectionLoss` around a bare `Detect` head."""
    ref = load()
    torch = ref.torch
    detect = detect_head(num_classes, reg_max, strides)

    class _Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.ModuleList([detect])
            self.args = types.SimpleNamespace(box=box, cls=cls, dfl=dfl)

    return ref.loss.v8DetectionLoss(_Model(), tal_topk=tal_topk)


def raw_to_preds(levels, reg_max, requires_grad=False):
    """Our NHWC levels (numpy) -> Detect's training dict, plus the leaf
    tensors `(boxes, scores)` whose gradients are the gradients w.r.t. our
    raw outputs (in ultralytics' channel-major layout)."""
    import numpy as np

    torch = load().torch
    split = 4 * reg_max
    flat = np.concatenate(
        [p.reshape(p.shape[0], -1, p.shape[-1]) for p in levels], 1)
    boxes = torch.tensor(np.ascontiguousarray(
        flat[..., :split].transpose(0, 2, 1)), requires_grad=requires_grad)
    scores = torch.tensor(np.ascontiguousarray(
        flat[..., split:].transpose(0, 2, 1)), requires_grad=requires_grad)
    feats = [torch.zeros((p.shape[0], 1, p.shape[1], p.shape[2]))
             for p in levels]
    return {"boxes": boxes, "scores": scores, "feats": feats}


def grads_to_levels(grad, level_hw):
    """`(B, N, ch)` numpy gradient -> our per-level `(B, H, W, ch)`."""
    out, start = [], 0
    for h, w in level_hw:
        part = grad[:, start:start + h * w]
        out.append(part.reshape(grad.shape[0], h, w, grad.shape[-1]))
        start += h * w
    return out


def batch_dict(boxes, labels):
    """Padded `rel_center_xywh` truths -> ultralytics' dataloader batch."""
    import numpy as np

    torch = load().torch
    rows = [(b, labels[b, m], *boxes[b, m])
            for b in range(labels.shape[0]) for m in range(labels.shape[1])
            if labels[b, m] >= 0]
    rows = np.asarray(rows, np.float32).reshape(-1, 6)
    return {"batch_idx": torch.tensor(rows[:, 0]),
            "cls": torch.tensor(rows[:, 1:2]),
            "bboxes": torch.tensor(rows[:, 2:6])}


class _FrozenClock:
    """Stands in for the `time` module inside ultralytics' nms.py."""

    def __init__(self, real):
        self._real = real

    def time(self):
        return 0.0

    def __getattr__(self, name):
        return getattr(self._real, name)


def reference_nms(prediction, **kwargs):
    """ultralytics 8's `non_max_suppression` without its time limit."""
    nms = load().nms
    real = nms.time
    nms.time = _FrozenClock(real)
    try:
        return nms.non_max_suppression(prediction, **kwargs)
    finally:
        nms.time = real


# Importing this module imports the reference, so `require_peer` sees a
# missing or broken install as an import failure.
load()
