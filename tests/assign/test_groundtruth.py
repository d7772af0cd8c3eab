"""The shared ground-truth policy: which rows are invalid, eager errors, masking and the metric."""

import numpy as np
import pytest
import tensorflow as tf

from keras_yolo.assign import groundtruth

# rel_center_xywh rows and whether each is invalid for 3 classes (hand-decided from the policy).
ROWS = [
    ([0.5, 0.5, 0.2, 0.2], 0, False),
    ([0.5, 0.5, 0.2, 0.2], -1, False),       # padding
    ([np.nan, 0, 0, 0], -5, False),          # padding: any negative label, whatever the box
    ([0.5, 0.5, 0.2, 0.2], 3, True),         # label == num_classes
    ([0.5, np.nan, 0.2, 0.2], 1, True),
    ([0.5, 0.5, -0.1, 0.2], 1, True),
    ([0.5, 0.5, 0.2, 0.0], 1, True),         # zero height
    ([1.2, 0.5, 0.2, 0.2], 2, True),         # x from 1.1 to 1.3: wholly outside
    ([1.05, 0.5, 0.2, 0.2], 2, False),       # partly inside
    ([-0.1, -0.1, 0.2, 0.2], 2, True),       # touches the image only at its corner
]


def batch():
    boxes = np.array([[r[0] for r in ROWS]], np.float32)
    labels = np.array([[r[1] for r in ROWS]], np.int32)
    expected = np.array([[r[2] for r in ROWS]])
    return boxes, labels, expected


def test_invalid_rows_follow_the_policy():
    boxes, labels, expected = batch()
    got = groundtruth.invalid_rows(boxes, labels, 3, "rel_center_xywh")
    np.testing.assert_array_equal(got, expected)


def test_pixel_formats_check_the_far_edges_only_when_the_image_size_is_known():
    boxes = np.array([[700.0, 10.0, 720.0, 30.0]], np.float32)   # right of a 640-wide image
    labels = np.array([0], np.int32)
    assert not groundtruth.invalid_rows(boxes, labels, 1, "xyxy")[0]
    assert groundtruth.invalid_rows(boxes, labels, 1, "xyxy", image_shape=(480, 640))[0]


def test_float_labels_must_be_integers():
    boxes = np.array([[0.5, 0.5, 0.2, 0.2]] * 3, np.float32)
    labels = np.array([1.0, 1.5, np.inf], np.float32)
    np.testing.assert_array_equal(
        groundtruth.invalid_rows(boxes, labels, 3, "rel_center_xywh"), [False, True, True])


def test_sanitize_raises_eagerly_naming_image_row_field_and_value():
    boxes, labels, _ = batch()
    with pytest.raises(groundtruth.GroundTruthError,
                       match=r"image 0 row 3: field 'labels' = 3 is outside \[0, 3\)"):
        groundtruth.sanitize({"boxes": boxes, "labels": labels}, 3, "rel_center_xywh")


def test_sanitize_masks_in_a_compiled_step_with_unknown_shapes():
    boxes, labels, expected = batch()
    spec = [tf.TensorSpec((None, None, 4), tf.float32), tf.TensorSpec((None, None), tf.int32)]

    @tf.function(input_signature=spec, jit_compile=True)
    def run(b, l):
        y = {"boxes": b, "labels": l}
        clean_boxes, clean_labels = groundtruth.sanitize(y, 3, "rel_center_xywh")
        return clean_boxes, clean_labels, groundtruth.count_invalid(y, 3, "rel_center_xywh")

    clean_boxes, clean_labels, count = run(boxes, labels)
    keep = (labels >= 0) & ~expected
    np.testing.assert_array_equal(clean_labels, np.where(keep, labels, -1))
    np.testing.assert_array_equal(clean_boxes, np.where(keep[..., None], boxes, 0.0))
    assert float(count) == expected.sum() == 6


def test_yolo_model_reports_masked_rows_as_invalid_boxes():
    import keras
    from keras_yolo import losses
    from keras_yolo.models import YoloModel

    inputs = keras.Input((64, 64, 3))
    raw = keras.layers.Conv2D(5 * 8, 1, strides=32)(inputs)
    raw = keras.layers.Reshape((2, 2, 5, 8))(raw)
    model = YoloModel(inputs, raw)
    model.compile(optimizer="sgd", loss=losses.YoloV2Loss(num_classes=3), jit_compile=True)
    boxes, labels, expected = batch()
    images = np.zeros((2, 64, 64, 3), np.float32)
    y = {"boxes": np.repeat(boxes, 2, 0), "labels": np.repeat(labels, 2, 0)}
    history = model.fit(images, y, batch_size=1, epochs=1, verbose=0)
    assert history.history["invalid_boxes"] == [2 * expected.sum()]
    assert np.isfinite(history.history["loss"][0])
