"""keras_yolo.checks: each check passes good values and names the bad one."""

import numpy as np
import pytest

from keras_yolo import boxes, checks


def test_formats_are_the_boxes_formats():
    assert checks.FORMATS == boxes.FORMATS
    for fmt in checks.FORMATS:
        checks.check_format(fmt)
    with pytest.raises(ValueError, match=r"`target` must be one of .*got 'cxcy'"):
        checks.check_format("cxcy", "target")


def test_image_shape_needed_for_pixel_formats_only():
    checks.check_image_shape("rel_xyxy", None)
    checks.check_image_shape("xyxy", (480, 640))
    with pytest.raises(ValueError, match="image_shape"):
        checks.check_image_shape("center_xywh", None)


def test_positive_int():
    for good in (1, 7, np.int64(3)):
        checks.check_positive_int("grid_size", good)
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match="`grid_size` must be a positive integer"):
            checks.check_positive_int("grid_size", bad)


def test_non_negative_and_unit_interval_name_the_argument():
    checks.check_non_negative(a=0.0, b=3)
    checks.check_unit_interval(conf_thres=0.0, iou_thres=1.0)
    with pytest.raises(ValueError, match="`b` must be >= 0"):
        checks.check_non_negative(a=1.0, b=-1e-9)
    with pytest.raises(ValueError, match=r"`iou_thres` must be in \[0, 1\]"):
        checks.check_unit_interval(conf_thres=0.5, iou_thres=float("nan"))
