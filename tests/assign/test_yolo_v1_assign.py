"""keras_yolo.assign.yolo_v1: the responsible predictor, by hand."""

import numpy as np
import tensorflow as tf

from keras_yolo.assign import yolo_v1 as assign


def test_iou_ties_go_to_the_lowest_index():
    pred = tf.constant([[[[[0.5, 0.5, 0.2, 0.2]] * 3]]], tf.float32)
    truth = tf.constant([[[[0.5, 0.5, 0.2, 0.2]]]], tf.float32)
    one_hot, iou = assign.responsible_predictor(pred, truth, 7)
    np.testing.assert_allclose(iou.numpy().ravel(), [1, 1, 1], rtol=1e-6)
    np.testing.assert_array_equal(one_hot.numpy().ravel(), [1, 0, 0])
