"""COCO mAP: hand-computed cases and an independent numpy AP derivation."""

import numpy as np
import pytest

from keras_yolo import metrics


def _det(boxes, scores, classes):
    boxes = np.asarray(boxes, np.float32).reshape(1, -1, 4)
    k = boxes.shape[1]
    return {"boxes": boxes, "scores": np.asarray(scores, np.float32).reshape(1, k),
            "classes": np.asarray(classes, np.int32).reshape(1, k),
            "num_detections": np.asarray([k], np.int32)}


def _gt(boxes, labels):
    boxes = np.asarray(boxes, np.float32).reshape(1, -1, 4)
    return {"boxes": boxes, "labels": np.asarray(labels, np.int32).reshape(1, -1)}


def test_perfect_detections_give_map_one():
    gt = _gt([[0, 0, 40, 40], [50, 50, 90, 70], [10, 60, 30, 95]], [0, 1, 1])
    det = _det(gt["boxes"][0], [0.9, 0.8, 0.7], [0, 1, 1])
    result = metrics.coco_map(gt, det, "xyxy", num_classes=2)
    assert result["map"] == pytest.approx(1.0)
    assert result["map50"] == pytest.approx(1.0)
    assert result["map75"] == pytest.approx(1.0)
    assert result["mar_100"] == pytest.approx(1.0)


def test_shifted_box_has_iou_two_thirds_so_ap_is_four_tenths():
    # Truth 10x10 at the origin, detection shifted by 2 px in x:
    # IoU = 8*10 / (100 + 100 - 80) = 2/3, a hit at t = .50 .55 .60 .65
    # and a miss at .70 ... .95, so map = 4/10, map50 = 1, map75 = 0.
    gt = _gt([[0, 0, 10, 10]], [0])
    det = _det([[2, 0, 12, 10]], [0.9], [0])
    result = metrics.coco_map(gt, det, "xyxy")
    assert result["map"] == pytest.approx(0.4)
    assert result["map50"] == pytest.approx(1.0)
    assert result["map75"] == pytest.approx(0.0)


def test_false_positive_ranked_first_gives_two_thirds():
    # Scores: FP .9, TP .8, TP .7 over 2 truths: precision 0, 1/2, 2/3 at
    # recall 0, 1/2, 1; the interpolated envelope is 2/3 at every recall,
    # so AP = 2/3 at every IoU threshold.
    gt = _gt([[0, 0, 20, 20], [40, 40, 60, 60]], [0, 0])
    det = _det([[70, 70, 90, 90], [0, 0, 20, 20], [40, 40, 60, 60]],
               [0.9, 0.8, 0.7], [0, 0, 0])
    result = metrics.coco_map(gt, det, "xyxy")
    assert result["map"] == pytest.approx(2 / 3)
    assert result["map50"] == pytest.approx(2 / 3)


def test_wrong_class_padding_and_num_detections():
    gt = {"boxes": np.array([[[0, 0, 20, 20], [5, 5, 6, 6]]], np.float32),
          "labels": np.array([[0, -1]], np.int32)}
    # Row 0: wrong class; row 1: correct box but beyond num_detections;
    # row 2: padding with class -1.
    det = {"boxes": np.array([[[0, 0, 20, 20], [0, 0, 20, 20], [-1] * 4]],
                             np.float32),
           "scores": np.array([[0.9, 0.8, -1]], np.float32),
           "classes": np.array([[1, 0, -1]], np.int32),
           "num_detections": np.array([1], np.int32)}
    result = metrics.coco_map(gt, det, "xyxy", num_classes=2)
    assert result["map"] == pytest.approx(0.0)
    det["num_detections"] = np.array([2], np.int32)
    result = metrics.coco_map(gt, det, "xyxy", num_classes=2)
    assert result["map"] == pytest.approx(1.0)


def test_relative_format_needs_image_shape_and_matches_pixels():
    gt = _gt([[0.5, 0.5, 0.75, 0.75]], [0])          # rel_center_xywh
    det = _det([[0.5, 0.5, 0.75, 0.75]], [0.5], [0])
    with pytest.raises(ValueError, match="image_shape"):
        metrics.coco_map(gt, det, "rel_center_xywh")
    result = metrics.coco_map(gt, det, "rel_center_xywh", image_shape=(64, 64))
    assert result["map"] == pytest.approx(1.0)
    # 48x48 px box: area 2304 is COCO "medium" (32^2 <= a <= 96^2).
    assert result["map_medium"] == pytest.approx(1.0)
    assert result["map_small"] == -1.0


def test_no_detections_give_zero_and_bad_input_is_named():
    gt = _gt([[0, 0, 10, 10]], [0])
    det = _det(np.zeros((0, 4)), [], [])
    assert metrics.coco_map(gt, det, "xyxy", num_classes=1)["map"] == 0.0
    with pytest.raises(ValueError, match="y_pred"):
        metrics.coco_map(gt, {"boxes": det["boxes"]}, "xyxy")
    with pytest.raises(ValueError, match="bounding_box_format"):
        metrics.coco_map(gt, det, "xyxz")
    with pytest.raises(ValueError, match="classes"):
        metrics.coco_map(gt, _det([[0, 0, 10, 10]], [0.5], [3]), "xyxy",
                         num_classes=2)


# --- an independent float64 derivation of COCO AP (no pycocotools) --------

def _iou(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], -1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _reference_ap(gt_boxes, gt_labels, det_boxes, det_scores, det_classes,
                  cls, t):
    """AP of one class at IoU threshold t: greedy matching per image in
    score order (each detection takes the unmatched truth of highest IoU
    >= t), precision envelope sampled at 101 recall points."""
    records, npos = [], 0
    for i in range(len(gt_boxes)):
        g = gt_boxes[i][gt_labels[i] == cls]
        npos += len(g)
        keep = det_classes[i] == cls
        d, s = det_boxes[i][keep], det_scores[i][keep]
        order = np.argsort(-s, kind="mergesort")
        used = np.zeros(len(g), bool)
        ious = _iou(d[order], g) if len(g) and len(d) else np.zeros((len(d), len(g)))
        for n, j in enumerate(order):
            cand = np.where(~used & (ious[n] >= t), ious[n], -1)
            hit = len(g) > 0 and cand.max() >= 0
            if hit:
                used[cand.argmax()] = True
            records.append((s[j], hit))
    if npos == 0:
        return None
    records.sort(key=lambda r: -r[0])
    tp = np.cumsum([r[1] for r in records], dtype=np.float64)
    fp = np.cumsum([not r[1] for r in records], dtype=np.float64)
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    samples = []
    for r in np.linspace(0, 1, 101):
        idx = np.searchsorted(recall, r, side="left")
        samples.append(envelope[idx] if idx < len(envelope) else 0.0)
    return float(np.mean(samples))


def test_matches_independent_numpy_ap_on_random_detections():
    rng = np.random.default_rng(0)
    n, m, k, c = 6, 5, 12, 3
    xy = rng.uniform(0, 150, (n, m, 2))
    wh = rng.uniform(20, 100, (n, m, 2))
    gt_boxes = np.concatenate([xy, xy + wh], -1)
    gt_labels = rng.integers(0, c, (n, m))
    gt_labels[:, -1] = -1                          # a padded row per image
    # Detections: jittered copies of truths (some with a wrong class) + noise.
    src = rng.integers(0, m - 1, (n, k))
    base = np.take_along_axis(gt_boxes, src[..., None], 1)
    jitter = rng.normal(0, 8, (n, k, 4))
    noise = rng.uniform(0, 1, (n, k, 1)) < 0.25
    rand_xy = rng.uniform(0, 200, (n, k, 2))
    rand = np.concatenate([rand_xy, rand_xy + rng.uniform(10, 60, (n, k, 2))], -1)
    det_boxes = np.where(noise, rand, base + jitter)
    det_boxes[..., 2:] = np.maximum(det_boxes[..., 2:], det_boxes[..., :2] + 1)
    det_classes = np.where(rng.uniform(size=(n, k)) < 0.8,
                           np.take_along_axis(gt_labels, src, 1),
                           rng.integers(0, c, (n, k)))
    det_scores = rng.uniform(0.05, 1, (n, k))
    result = metrics.coco_map(
        {"boxes": gt_boxes, "labels": gt_labels},
        {"boxes": det_boxes, "scores": det_scores, "classes": det_classes,
         "num_detections": np.full(n, k)}, "xyxy", num_classes=c)
    valid = [gt_labels[i] >= 0 for i in range(n)]
    gtb = [gt_boxes[i][valid[i]] for i in range(n)]
    gtl = [gt_labels[i][valid[i]] for i in range(n)]
    thresholds = np.linspace(0.5, 0.95, 10)
    table = np.array([[_reference_ap(gtb, gtl, det_boxes, det_scores,
                                     det_classes, cls, t)
                       for cls in range(c)] for t in thresholds], np.float64)
    assert 0.1 < table.mean() < 0.9, "a non-trivial case"
    assert result["map"] == pytest.approx(table.mean(), abs=1e-12)
    assert result["map50"] == pytest.approx(table[0].mean(), abs=1e-12)
    assert result["map75"] == pytest.approx(table[5].mean(), abs=1e-12)


def test_callback_logs_map_every_n_epochs_and_after_the_last():
    import keras
    import tensorflow as tf

    n = 4
    gt = {"boxes": np.tile(np.array([[[4, 4, 20, 28], [0, 0, 0, 0]]], np.float32), (n, 1, 1)),
          "labels": np.tile(np.array([[1, -1]], np.int32), (n, 1))}
    images = np.zeros((n, 32, 32, 3), np.float32)
    val = tf.data.Dataset.from_tensor_slices((images, gt)).batch(2)

    def postprocess(outputs):  # a fixed detector: truth box, and a miss
        b = tf.shape(outputs)[0]
        boxes = tf.constant([[4, 4, 20, 28], [0, 0, 8, 8]], tf.float32)
        return {"boxes": tf.tile(boxes[None], [b, 1, 1]),
                "scores": tf.tile(tf.constant([[0.9, 0.95]]), [b, 1]),
                "classes": tf.tile(tf.constant([[1, 0]]), [b, 1]),
                "num_detections": tf.fill([b], 2)}

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    cb = metrics.CocoMetricCallback(val, "xyxy", postprocess=postprocess,
                                    every_n_epochs=2, num_classes=2)
    history = model.fit(images, np.zeros((n, 1)), epochs=3, verbose=0,
                        callbacks=[cb])
    assert [h["epoch"] for h in cb.history] == [2, 3]
    # class 1: AP 1; class 0 has no truth (excluded): map = 1.
    assert cb.history[0]["map"] == pytest.approx(1.0)
    assert history.history["val_map"] == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="every_n_epochs"):
        metrics.CocoMetricCallback(val, "xyxy", every_n_epochs=0)


def test_pr_curve_is_the_interpolated_envelope_at_iou_half():
    # TP .9, FP .8, TP .7 over 2 truths: precision 1 up to recall 1/2, then
    # 2/3 up to recall 1 (envelope): 51 points at 1, 50 at 2/3.
    gt = _gt([[0, 0, 20, 20], [40, 40, 60, 60]], [0, 0])
    det = _det([[0, 0, 20, 20], [70, 70, 90, 90], [40, 40, 60, 60]],
               [0.9, 0.8, 0.7], [0, 0, 0])
    result = metrics.coco_map(gt, det, "xyxy", num_classes=2,
                              return_pr_curve=True, return_per_class=True)
    np.testing.assert_allclose(result["pr_recall"], np.linspace(0, 1, 101))
    expected = np.r_[np.ones(51), np.full(50, 2 / 3)]
    np.testing.assert_allclose(result["pr_precision"][0], expected)
    assert result["pr_precision"][1] == [-1.0] * 101      # no truth
    assert np.mean(result["pr_precision"][0]) == pytest.approx(
        result["per_class_map50"][0])


def test_confusion_matrix_hand_case():
    # Image: truth A (class 0) and B (class 1); detections: on A as class 1
    # (a confusion), on B as class 1 (correct), a stray class-0 box (false
    # positive), a low-score box on A (ignored); class 2's truth missed.
    gt = _gt([[0, 0, 20, 20], [40, 40, 60, 60], [70, 0, 90, 20]], [0, 1, 2])
    det = _det([[1, 1, 20, 20], [40, 40, 61, 60], [0, 70, 20, 90],
                [0, 0, 20, 20]], [0.9, 0.8, 0.7, 0.2], [1, 1, 0, 0])
    matrix = metrics.confusion_matrix(gt, det, "xyxy", num_classes=3)
    expected = np.zeros((4, 4))
    expected[1, 0] = 1      # A detected as class 1
    expected[1, 1] = 1      # B correct
    expected[0, 3] = 1      # stray detection: background predicted as 0
    expected[3, 2] = 1      # class 2 missed
    np.testing.assert_array_equal(matrix, expected)


def test_confusion_matrix_matches_ultralytics_on_random_detections():
    torch = pytest.importorskip("torch")
    um = pytest.importorskip("ultralytics.utils.metrics")
    rng = np.random.default_rng(3)
    num_classes, images, m, k = 4, 12, 6, 9
    xy = rng.uniform(0, 80, (images, m, 2))
    wh = rng.uniform(8, 40, (images, m, 2))
    gt_boxes = np.concatenate([xy, xy + wh], -1)
    labels = rng.integers(0, num_classes, (images, m))
    labels[rng.uniform(size=(images, m)) < 0.3] = -1           # padding
    # Detections: jittered truths (often matching) and random boxes.
    source = rng.integers(0, m, (images, k))
    det_boxes = np.take_along_axis(gt_boxes, source[..., None], 1)
    det_boxes = det_boxes + rng.normal(0, 4, det_boxes.shape)
    random = rng.uniform(size=(images, k)) < 0.3
    corner = rng.uniform(0, 80, (random.sum(), 2))
    det_boxes[random] = np.concatenate(
        [corner, corner + rng.uniform(8, 40, corner.shape)], -1)
    scores = rng.uniform(0, 1, (images, k))
    classes = np.where(rng.uniform(size=(images, k)) < 0.7,
                       np.take_along_axis(np.maximum(labels, 0), source, 1),
                       rng.integers(0, num_classes, (images, k)))
    num = rng.integers(0, k + 1, images)
    ours = metrics.confusion_matrix(
        {"boxes": gt_boxes, "labels": labels},
        {"boxes": det_boxes, "scores": scores, "classes": classes,
         "num_detections": num}, "xyxy", num_classes)
    reference = um.ConfusionMatrix(names={i: str(i) for i in
                                          range(num_classes)})
    for i in range(images):
        keep = labels[i] >= 0
        reference.process_batch(
            {"bboxes": torch.tensor(det_boxes[i, :num[i]]),
             "conf": torch.tensor(scores[i, :num[i]]),
             "cls": torch.tensor(classes[i, :num[i]])},
            {"bboxes": torch.tensor(gt_boxes[i, keep]),
             "cls": torch.tensor(labels[i, keep])})
    assert ours.sum() > 20 and np.trace(ours[:-1, :-1]) > 5
    np.testing.assert_array_equal(ours, reference.matrix)


def _pycocotools_map(tmp_path, height, width, truths, detections):
    """pycocotools run directly on COCO JSON files: `truths` rows
    `(x, y, w, h, category, iscrowd)`, `detections` rows
    `(x, y, w, h, score, category)`, one image; returns `stats[:3]`."""
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(json.dumps({
        "images": [{"id": 1, "height": height, "width": width,
                    "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": k + 1, "image_id": 1, "category_id": c,
             "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd}
            for k, (x, y, w, h, c, crowd) in enumerate(truths)]}))
    dt_file.write_text(json.dumps([
        {"image_id": 1, "category_id": c, "bbox": [x, y, w, h], "score": s}
        for x, y, w, h, s, c in detections]))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(str(dt_file)), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:3]


def test_detection_on_a_crowd_region_is_ignored_as_pycocotools_does(
        tmp_path):
    # Class 0: truth A, a crowd region R of class 0; class 1: truth B.
    # Detections: on R as class 0 (0.9, before the hit on A), on R as class
    # 1 (0.95: R is class 0's, so a false positive of class 1 either way),
    # then hits on A and B. Without R: class 0's AP is 1/2 (a false positive
    # first), class 1's 1/2; with R ignored class 0's AP is 1.
    height, width = 100, 120
    a, b, r = [10, 10, 40, 40], [70, 10, 100, 40], [50, 50, 110, 95]
    gt = {"boxes": np.array([[a, b]], np.float32),
          "labels": np.array([[0, 1]], np.int32)}
    on_r = [55, 55, 100, 90]
    det = _det([on_r, on_r, a, b], [0.9, 0.95, 0.8, 0.7], [0, 1, 0, 1])
    before = metrics.coco_map(gt, det, "xyxy", image_shape=(height, width),
                              num_classes=2)
    assert before["map"] == pytest.approx(0.5)
    gt["ignored_boxes"] = np.array([[r, [0, 0, 0, 0]]], np.float32)
    gt["ignored_labels"] = np.array([[0, -1]], np.int32)
    after = metrics.coco_map(gt, det, "xyxy", image_shape=(height, width),
                             num_classes=2, return_per_class=True)
    assert after["map"] == pytest.approx(0.75)
    assert after["per_class_map"] == pytest.approx([1.0, 0.5])

    def xywh(box):
        return [box[0], box[1], box[2] - box[0], box[3] - box[1]]

    truths = [(*xywh(a), 1, 0), (*xywh(b), 2, 0)]
    detections = [(*xywh(on_r), 0.9, 1), (*xywh(on_r), 0.95, 2),
                  (*xywh(a), 0.8, 1), (*xywh(b), 0.7, 2)]
    direct_before = _pycocotools_map(tmp_path, height, width, truths,
                                     detections)
    direct_after = _pycocotools_map(tmp_path, height, width,
                                    truths + [(*xywh(r), 1, 1)], detections)
    np.testing.assert_allclose([before[k] for k in ("map", "map50", "map75")],
                               direct_before)
    np.testing.assert_allclose([after[k] for k in ("map", "map50", "map75")],
                               direct_after)
    # The same in a relative format: the regions are converted like truths.
    scale = np.array([width, height, width, height], np.float32)
    rel_gt = {k: v / scale if k.endswith("boxes") else v
              for k, v in gt.items()}
    rel_det = dict(det, boxes=det["boxes"] / scale)
    rel = metrics.coco_map(rel_gt, rel_det, "rel_xyxy",
                           image_shape=(height, width), num_classes=2)
    assert rel["map"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="'ignored_boxes' without "
                       "'ignored_labels'"):
        metrics.coco_map({"boxes": gt["boxes"], "labels": gt["labels"],
                          "ignored_boxes": gt["ignored_boxes"]}, det, "xyxy")


def test_evaluate_reads_ignored_regions_from_the_dataset_batches():
    import tensorflow as tf

    # Two batches whose ignored rows are padded to different widths.
    images = np.zeros((3, 100, 100, 3), np.float32)
    boxes = np.array([[[10, 10, 40, 40]]] * 3, np.float32)
    labels = np.zeros((3, 1), np.int32)
    region = [50, 50, 90, 90]
    batches = [
        (images[:2], {"boxes": boxes[:2], "labels": labels[:2],
                      "ignored_boxes": np.array([[region], [region]],
                                                np.float32),
                      "ignored_labels": np.array([[0], [-1]], np.int32)}),
        (images[2:], {"boxes": boxes[2:], "labels": labels[2:],
                      "ignored_boxes": np.zeros((1, 2, 4), np.float32),
                      "ignored_labels": np.full((1, 2), -1, np.int32)})]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(batches), output_signature=(
            tf.TensorSpec((None, 100, 100, 3), tf.float32),
            {"boxes": tf.TensorSpec((None, 1, 4), tf.float32),
             "labels": tf.TensorSpec((None, 1), tf.int32),
             "ignored_boxes": tf.TensorSpec((None, None, 4), tf.float32),
             "ignored_labels": tf.TensorSpec((None, None), tf.int32)}))

    def detector(x):
        # Per image: a hit on the truth (0.5) and a box on the region (0.9).
        n = x.shape[0]
        return {"boxes": np.array([[region, [10, 10, 40, 40]]] * n,
                                  np.float32),
                "scores": np.array([[0.9, 0.5]] * n, np.float32),
                "classes": np.zeros((n, 2), np.int32),
                "num_detections": np.full((n,), 2, np.int32)}

    result = metrics.evaluate(detector, dataset, "xyxy", num_classes=1)
    # Image 0's region detection is ignored; images 1 and 2 have no region,
    # so their two 0.9 detections are false positives ranked first:
    # precision 0, 0, 1/3, 2/4, 3/5 at recall 0, 0, 1/3, 2/3, 1 -> AP 3/5.
    assert result["map"] == pytest.approx(0.6, abs=1e-6)
    plain = metrics.evaluate(detector, dataset.map(
        lambda x, y: (x, {"boxes": y["boxes"], "labels": y["labels"]})),
        "xyxy", num_classes=1)
    # Without the regions: 3 false positives first -> 1/2.
    assert plain["map"] == pytest.approx(0.5, abs=1e-6)
