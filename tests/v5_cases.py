"""Shared YOLOv5 test cases: padded random truths, used by the YOLOv5 loss and model tests."""

from references import padded_random_truths


def random_truths(rng, per_image, max_boxes, num_classes, crafted=()):
    """Padded rel_center_xywh truths: random rows, then crafted rows."""
    return padded_random_truths(rng, per_image, max_boxes, num_classes, crafted)
