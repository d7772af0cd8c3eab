"""YOLOv2 dimension clusters: k-means with the 1 - IoU distance."""

import numpy as np
import pytest

from keras_yolo import anchors
import references

CENTRES = np.array([[12.0, 10.0], [40.0, 22.0], [20.0, 80.0], [150.0, 120.0]])


def clustered_sizes(seed=0, per_cluster=150, spread=0.06):
    """Boxes around four known sizes (log-normal jitter), shuffled."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([
        centre * np.exp(rng.normal(0, spread, (per_cluster, 2)))
        for centre in CENTRES])
    return sizes[rng.permutation(len(sizes))]


def test_recovers_known_clusters_sorted_by_area():
    sizes = clustered_sizes()
    found, mean_iou = anchors.kmeans_anchors(sizes, k=4, seed=0)
    assert found.shape == (4, 2)
    np.testing.assert_allclose(found, CENTRES, rtol=0.03)  # sorted by area
    # The reported mean IoU is the mean over boxes of the best IoU, by hand.
    by_hand = np.mean([max(references.shape_iou(s, a) for a in found) for s in sizes])
    assert mean_iou == pytest.approx(by_hand, rel=1e-12)
    assert mean_iou == pytest.approx(anchors.mean_best_iou(sizes, found))
    assert mean_iou > 0.9


def test_centroids_are_the_mean_size_of_their_members():
    sizes = clustered_sizes(1)
    found, _ = anchors.kmeans_anchors(sizes, k=4, seed=3)
    iou = np.array([[references.shape_iou(s, a) for a in found] for s in sizes])
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


# --- YOLOv5 autoanchor against yolov5.utils.autoanchor -----------------------

def _label_set(seed, images=120, elongated=False):
    """Images of mixed shapes with 1-6 labels each, relative (w, h) spread
    log-uniformly (elongated: 6:1 boxes no default anchor covers)."""
    rng = np.random.default_rng(seed)
    shapes = rng.choice([[640, 480], [480, 640], [800, 800], [500, 375]],
                        size=images)
    sizes = []
    for _ in range(images):
        n = rng.integers(1, 7)
        w = np.exp(rng.uniform(np.log(0.02), np.log(0.6), n))
        h = w * (np.exp(rng.normal(0, 0.3, n)) if not elongated
                 else rng.choice([6.0, 1 / 6.0], n))
        sizes.append(np.stack([w, np.clip(h, 0.005, 1.0)], 1))
    return sizes, shapes


def _yolov5_dataset(sizes, shapes):
    import types

    labels = [np.concatenate([np.zeros((len(s), 3)), s], 1).astype(np.float32)
              for s in sizes]
    return types.SimpleNamespace(shapes=np.asarray(shapes, np.float64),
                                 labels=labels)


def _scipy_kmeans(obs, k, iter=30, thresh=1e-5):
    """scipy.cluster.vq.kmeans (not installed here): `iter` random starts
    from the observations, Lloyd until the mean distance settles."""
    best = None
    for _ in range(iter):
        book = obs[np.random.choice(len(obs), k, replace=False)]
        previous = np.inf
        while True:
            d = np.linalg.norm(obs[:, None] - book[None], axis=-1)
            code = d.argmin(1)
            mean = d[np.arange(len(obs)), code].mean()
            book = np.array([obs[code == j].mean(0) for j in range(len(book))
                             if (code == j).any()])
            if previous - mean <= thresh:
                break
            previous = mean
        if best is None or mean < best[1]:
            best = (book, mean)
    return best


@pytest.fixture(scope="module")
def autoanchor_ref():
    import sys
    import types

    from conftest import require_peer

    ref = require_peer("yolov5_reference", "(bash .ci/install_parity)").load()
    if "scipy.cluster.vq" not in sys.modules:
        try:
            import scipy.cluster.vq  # noqa: F401
        except ImportError:
            vq = types.ModuleType("scipy.cluster.vq")
            vq.kmeans = _scipy_kmeans
            cluster = types.ModuleType("scipy.cluster")
            cluster.vq = vq
            scipy = sys.modules.setdefault("scipy", types.ModuleType("scipy"))
            scipy.cluster = cluster
            sys.modules["scipy.cluster"] = cluster
            sys.modules["scipy.cluster.vq"] = vq
    from yolov5.utils import autoanchor

    return ref, autoanchor


def _run_check_anchors(ref, autoanchor, dataset, anchors, seed):
    """yolov5's check_anchors on a bare Detect stand-in; returns the
    anchors it leaves (pixels) and its logged 'aat anchors/target, bpr'."""
    import logging
    import random
    import re
    import types

    torch = ref.torch
    stride = torch.tensor([8.0, 16.0, 32.0])
    detect = types.SimpleNamespace(
        anchors=torch.tensor(anchors, dtype=torch.float32)
        / stride.view(-1, 1, 1), stride=stride)
    model = types.SimpleNamespace(model=[detect])
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger = ref.general.LOGGER
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    np.random.seed(seed)
    random.seed(seed)
    scale = np.random.uniform(0.9, 1.1, size=(len(dataset.shapes), 1))
    np.random.seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny tensors: 20x faster than 2 threads
    try:
        autoanchor.check_anchors(dataset, model, thr=4.0, imgsz=640)
    finally:
        torch.set_num_threads(threads)
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = " ".join(records)
    assert "ERROR" not in text, text
    aat, bpr = map(float, re.search(r"([\d.]+) anchors/target, ([\d.]+) "
                                    r"Best Possible Recall", text).groups())
    return (detect.anchors * stride.view(-1, 1, 1)).numpy(), aat, bpr, scale


def test_recall_of_default_anchors_equals_check_anchors(autoanchor_ref):
    ref, autoanchor = autoanchor_ref
    sizes, shapes = _label_set(0)
    dataset = _yolov5_dataset(sizes, shapes)
    kept, aat, bpr, scale = _run_check_anchors(
        ref, autoanchor, dataset, anchors.YOLOV5_ANCHORS, seed=0)
    # Same label sizes as yolov5 (wh0) and the same per-image jitter.
    ours_wh = anchors.label_sizes(sizes, shapes, 640)
    jitter = np.concatenate([np.full((len(s), 1), sc) for s, sc in
                             zip(sizes, scale[:, 0])])
    our_bpr, our_aat = anchors.anchor_recall(ours_wh * jitter,
                                             anchors.YOLOV5_ANCHORS)
    assert our_bpr == pytest.approx(bpr, abs=5e-4)     # logged as %.3f
    assert our_aat == pytest.approx(aat, abs=5e-3)     # logged as %.2f
    assert our_bpr > 0.98
    np.testing.assert_allclose(kept, np.asarray(anchors.YOLOV5_ANCHORS))
    new, report = anchors.check_anchors(ours_wh, anchors.YOLOV5_ANCHORS)
    assert not report["replaced"] and report["bpr"] > 0.98
    np.testing.assert_allclose(new, anchors.YOLOV5_ANCHORS)


def test_poor_anchors_are_evolved_as_well_as_kmean_anchors(autoanchor_ref):
    """6:1 boxes: the default anchors miss many (BPR < 0.98); yolov5's
    k-means + 1000 generations and ours (other random draws) reach about
    the same fitness and recall, far above the defaults."""
    ref, autoanchor = autoanchor_ref
    sizes, shapes = _label_set(1, elongated=True)
    dataset = _yolov5_dataset(sizes, shapes)
    theirs, _, bpr, _ = _run_check_anchors(
        ref, autoanchor, dataset, anchors.YOLOV5_ANCHORS, seed=1)
    assert bpr < 0.98
    wh = anchors.label_sizes(sizes, shapes, 640)
    ours, report = anchors.check_anchors(wh, anchors.YOLOV5_ANCHORS, seed=1)
    assert report["bpr"] == pytest.approx(bpr, abs=0.02)
    assert report["replaced"] and report["new_bpr"] > report["bpr"]
    assert ours.shape == (3, 3, 2)
    fit_theirs = anchors.anchor_fitness(wh, theirs)
    fit_ours = anchors.anchor_fitness(wh, ours)
    fit_default = anchors.anchor_fitness(wh, anchors.YOLOV5_ANCHORS)
    assert fit_ours > fit_default + 0.05
    assert fit_ours == pytest.approx(fit_theirs, abs=0.02)
    assert anchors.anchor_recall(wh, ours)[0] >= \
        anchors.anchor_recall(wh, theirs)[0] - 0.01
    # Sorted by area, small anchors on the stride-8 level.
    areas = ours.reshape(-1, 2).prod(1)
    assert np.all(np.diff(areas) >= 0)


def test_fitness_and_label_sizes_hand_values():
    wh = np.array([[10.0, 10.0], [100.0, 20.0]])
    k = np.array([[20.0, 20.0]])
    # ratios: label 1 (0.5, 0.5) -> 0.5; label 2 (5, 1) -> min(0.2, 1) = 0.2
    assert anchors.anchor_fitness(wh, k) == pytest.approx((0.5 + 0.0) / 2)
    assert anchors.anchor_recall(wh, k) == (0.5, 0.5)
    sized = anchors.label_sizes([[[0.5, 0.25]]], [[800, 400]], 640)
    np.testing.assert_allclose(sized, [[320.0, 80.0]])
    with pytest.raises(ValueError, match="image shapes"):
        anchors.label_sizes([[[0.5, 0.5]]], [[1, 1], [2, 2]])
