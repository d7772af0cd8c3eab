"""The v5 head's bias priors equal yolov5's `Model._initialize_biases`
(objectness log(8 / (640 / s)²), classes log(0.6 / (nc − 0.99999)))."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conftest import require_peer  # noqa: E402


@pytest.mark.parametrize("num_classes", [1])
def test_yolov5_head_biases_equal_initialize_biases(num_classes):
    ref = require_peer("yolov5_reference",
                       "(bash .ci/install_parity)").load()
    torch = ref.torch
    import yolov5

    from keras_yolo import models

    cfg = os.path.join(os.path.dirname(yolov5.__file__), "models",
                       "yolov5n.yaml")
    torch_model = ref.yolo.DetectionModel(cfg, ch=3, nc=num_classes)
    detect = torch_model.model[-1]
    with torch.no_grad():
        for conv in detect.m:   # _initialize_biases adds to torch's init
            conv.bias.zero_()
    torch_model._initialize_biases()
    ours = models.build("yolov5n", num_classes=num_classes,
                        input_shape=(128, 128, 3))   # priors use 640
    for i, conv in enumerate(detect.m):
        expected = conv.bias.detach().numpy().reshape(3, -1)
        got = ours.get_layer(f"m24_m{i}_conv").bias.numpy().reshape(3, -1)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    if num_classes == 1:   # one class: p(class) starts near 1
        assert expected[0, 5] == pytest.approx(np.log(0.6 / 1e-5), rel=1e-4)
