"""The small YOLOv1 model with YoloV1Loss and YoloV1Decode: one step, and a fit that detects."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.layers import YoloV1Decode
from keras_yolo.losses import YoloV1Loss
from v1_cases import gt, random_case


def test_small_v1_output_and_one_fit_step():
    from keras_yolo.models import YoloModel
    from keras_yolo.models.small_v1 import small_v1
    model = small_v1(num_classes=3, grid_size=5, boxes_per_cell=2, input_size=64,
                     filters=(8, 8, 16), hidden_units=32, dropout=0.0)
    assert isinstance(model, YoloModel)
    assert model.output_shape == (None, 5, 5, 13)
    # The output bias starts every confidence at PRIOR_CONFIDENCE.
    decoded = YoloV1Decode(3, 5, 2)(model(tf.zeros([1, 64, 64, 3]), training=False))
    np.testing.assert_allclose(decoded["objectness"], 0.1, atol=0.05)
    rng = np.random.default_rng(14)
    boxes, labels, _ = random_case(rng, batch=4, s=5, nb=2, c=3, m=3)
    images = rng.uniform(size=(4, 64, 64, 3)).astype(np.float32)
    loss = YoloV1Loss(3, 5, 2)
    model.compile(keras.optimizers.SGD(0.0), loss=loss, jit_compile=False)
    logs = model.train_on_batch(images, gt(boxes, labels), return_dict=True)
    # YoloModel hands the ground-truth dict to the loss: fit's loss is the
    # loss of the training-mode output (no dropout, batch-norm batch stats).
    want = float(loss(gt(boxes, labels), model(images, training=True)))
    assert logs["loss"] == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
def test_small_v1_fits_and_detects_its_training_images():
    # End to end: model.fit with YoloV1Loss, then YoloV1Decode, NMS and COCO
    # mAP in inference mode on the same 64 images (measured: 0.94; the
    # ceiling is below 1 because a cell keeps one object).
    from keras_yolo.data import shapes
    from keras_yolo.metrics import coco_map
    from keras_yolo.models.small_v1 import small_v1
    from keras_yolo.postprocess import non_max_suppression
    keras.utils.set_random_seed(0)
    ds = shapes(64, 128, 3, seed=0).cache()
    model = small_v1(3, 7, 2, input_size=128, dropout=0.0)
    model.compile(keras.optimizers.Adam(1e-3), loss=YoloV1Loss(3, 7, 2),
                  jit_compile=True)
    model.fit(ds.batch(32), epochs=60, verbose=0)
    images, y = next(iter(ds.batch(64)))
    decoded = YoloV1Decode(3, 7, 2)(model(images, training=False))
    det = non_max_suppression(decoded, conf_thres=0.001, iou_thres=0.5,
                              max_det=100, bounding_box_format="rel_center_xywh")
    result = coco_map({k: v.numpy() for k, v in y.items()},
                      {k: v.numpy() for k, v in det.items()},
                      "rel_center_xywh", image_shape=(128, 128), num_classes=3)
    assert result["map50"] > 0.8
