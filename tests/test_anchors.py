"""YOLOv2 dimension clusters: k-means with the 1 - IoU distance."""

import numpy as np
import pytest

from keras_yolo import anchors

CENTRES = np.array([[12.0, 10.0], [40.0, 22.0], [20.0, 80.0], [150.0, 120.0]])


def clustered_sizes(seed=0, per_cluster=150, spread=0.06):
    """Boxes around four known sizes (log-normal jitter), shuffled."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([
        centre * np.exp(rng.normal(0, spread, (per_cluster, 2)))
        for centre in CENTRES])
    return sizes[rng.permutation(len(sizes))]


def shape_iou_np(a, b):
    inter = min(a[0], b[0]) * min(a[1], b[1])
    return inter / (a[0] * a[1] + b[0] * b[1] - inter)


def test_recovers_known_clusters_sorted_by_area():
    sizes = clustered_sizes()
    found, mean_iou = anchors.kmeans_anchors(sizes, k=4, seed=0)
    assert found.shape == (4, 2)
    np.testing.assert_allclose(found, CENTRES, rtol=0.03)  # sorted by area
    # The reported mean IoU is the mean over boxes of the best IoU, by hand.
    by_hand = np.mean([max(shape_iou_np(s, a) for a in found) for s in sizes])
    assert mean_iou == pytest.approx(by_hand, rel=1e-12)
    assert mean_iou == pytest.approx(anchors.mean_best_iou(sizes, found))
    assert mean_iou > 0.9


def test_centroids_are_the_mean_size_of_their_members():
    sizes = clustered_sizes(1)
    found, _ = anchors.kmeans_anchors(sizes, k=4, seed=3)
    iou = np.array([[shape_iou_np(s, a) for a in found] for s in sizes])
    members = iou.argmax(1)
    for j in range(4):  # a fixed point of the Lloyd iteration
        np.testing.assert_allclose(found[j], sizes[members == j].mean(0))


def test_deterministic_for_a_seed_and_more_clusters_fit_better():
    sizes = clustered_sizes(2, spread=0.4)
    a1, iou1 = anchors.kmeans_anchors(sizes, k=5, seed=7)
    a2, iou2 = anchors.kmeans_anchors(sizes, k=5, seed=7)
    np.testing.assert_array_equal(a1, a2)
    assert iou1 == iou2
    _, iou9 = anchors.kmeans_anchors(sizes, k=9, seed=7)
    _, iou1_cluster = anchors.kmeans_anchors(sizes, k=1, seed=7)
    assert iou1_cluster < iou1 < iou9


def test_boxes_in_a_box_format():
    sizes = clustered_sizes(4)
    xyxy = np.concatenate([np.full_like(sizes, 5.0), 5.0 + sizes], 1)
    from_boxes, iou_boxes = anchors.kmeans_anchors(
        xyxy, k=4, seed=1, bounding_box_format="xyxy")
    from_sizes, iou_sizes = anchors.kmeans_anchors(sizes, k=4, seed=1)
    np.testing.assert_allclose(from_boxes, from_sizes, rtol=1e-5)
    assert iou_boxes == pytest.approx(iou_sizes, rel=1e-6)


def test_bad_input_is_named():
    sizes = clustered_sizes(5)
    with pytest.raises(ValueError, match="`k`"):
        anchors.kmeans_anchors(sizes, k=0)
    with pytest.raises(ValueError, match="`k`"):
        anchors.kmeans_anchors(np.ones((3, 2)), k=2)  # one distinct size
    with pytest.raises(ValueError, match="bounding_box_format"):
        anchors.kmeans_anchors(np.ones((10, 4)), k=2)
    with pytest.raises(ValueError, match="> 0"):
        anchors.kmeans_anchors(np.array([[1.0, 2.0], [0.0, 3.0]]), k=1)
    with pytest.raises(ValueError, match="shape"):
        anchors.kmeans_anchors(np.ones((10, 3)), k=2)


def test_default_anchors_are_unchanged():
    cells = np.array(anchors.YOLOV2_VOC_ANCHORS) / anchors.YOLOV2_STRIDE
    np.testing.assert_allclose(cells[0, 0], [1.3221, 1.73145])
    assert np.array(anchors.YOLOV2_COCO_ANCHORS).shape == (1, 5, 2)
