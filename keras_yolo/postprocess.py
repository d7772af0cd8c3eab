"""From decoded predictions to detections: thresholds, scores and NMS.

The semantics are ultralytics yolov5's `utils/general.py:non_max_suppression`
(7.0.14), in fixed-size, graph- and XLA-friendly form:

1. a prediction is a candidate only if its objectness `p_o > conf_thres`
   (objectness removes most boxes before anything else is computed);
2. its class scores are `s_c = p_o * p_c`; without `multi_label` a candidate
   keeps its best class `c* = argmax_c s_c` and survives if `s_c* > conf_thres`;
   with `multi_label` every `(box, c)` pair with `s_c > conf_thres` is a
   candidate;
3. the `max_candidates` best candidates by score go through greedy NMS, per
   class (boxes of different classes never suppress each other) or
   class-agnostic; the first `max_det` kept, in decreasing score, are returned.

Two suppression rules are offered (`method`):

* `"iou"`: suppress a box whose IoU with a kept, higher-scoring box is
  `> iou_thres` (torchvision.ops.nms, as ultralytics uses it);
* `"diou"`: YOLOv4's DIoU-NMS (AlexeyAB darknet `diounms_sort`, cfg
  `nms_kind=diounms`, `beta_nms`): suppress when
  `IoU - (rho² / c²)^beta > iou_thres`, `rho` the distance between the two
  centres and `c` the diagonal of their smallest enclosing box. (darknet's
  `box_diounms` hard-codes `beta = 0.6`, the default here.)

Outputs are padded to `max_det` rows: boxes, scores and classes of padded rows
are -1, `num_detections` counts the real rows.
"""

import tensorflow as tf

from keras_yolo import boxes as box_ops
from keras_yolo.checks import check_format, check_unit_interval

# ultralytics' `max_wh`: per-class NMS shifts each box by class * MAX_WH
# pixels so boxes of different classes never overlap (larger than any image).
MAX_WH = 7680.0
# ultralytics' `max_nms`: most candidates that go into NMS per image.
MAX_NMS = 30000
# DIoU-NMS builds a (K, K) suppression matrix: 3000² booleans is 9 MB/image.
MAX_DIOU_CANDIDATES = 3000
# darknet's `box_diounms` exponent on rho²/c².
DIOU_BETA = 0.6
_PAD = -1


def _candidates(objectness, class_probs, conf_thres, multi_label, classes,
                max_candidates):
    """Fixed-size candidate set: `(B, K)` box index, class, score, valid."""
    num_boxes = objectness.shape[1]
    num_classes = class_probs.shape[2]
    scores = class_probs * objectness[..., None]  # s_c = p_o p_c
    is_candidate = objectness > conf_thres
    class_ok = tf.ones([num_classes], tf.bool)
    if classes is not None:
        class_ok = tf.reduce_any(
            tf.range(num_classes)[:, None] == tf.constant(list(classes),
                                                         tf.int32)[None, :],
            axis=1,
        )
    if multi_label and num_classes > 1:
        valid = (is_candidate[..., None] & (scores > conf_thres)
                 & class_ok[None, None, :])
        flat_scores = tf.reshape(tf.where(valid, scores, -1.0),
                                 [-1, num_boxes * num_classes])
        k = min(max_candidates, num_boxes * num_classes)
        top, index = tf.math.top_k(flat_scores, k=k)
        box_index = index // num_classes
        class_index = index % num_classes
    else:
        best = tf.reduce_max(scores, axis=-1)
        best_class = tf.argmax(scores, axis=-1, output_type=tf.int32)
        valid = (is_candidate & (best > conf_thres)
                 & tf.gather(class_ok, best_class))
        k = min(max_candidates, num_boxes)
        top, box_index = tf.math.top_k(tf.where(valid, best, -1.0), k=k)
        class_index = tf.gather(best_class, box_index, batch_dims=1)
    return box_index, class_index, top, top >= 0.0


def _pairwise_suppression(xyxy, iou_thres, method, beta):
    """`(B, K, K)` bool: row i would suppress column j (before greediness).

    darknet's `box_iou` / `box_diounms` (plain IoU where the enclosing box
    has no diagonal), as `keras_yolo.boxes.iou(convention="darknet")`.
    """
    overlap = box_ops.iou(xyxy, xyxy, "xyxy", variant=method, pairwise=True,
                          convention="darknet", diou_exponent=beta)
    return overlap > iou_thres


@tf.function  # a graph loop also when called eagerly (inlined in graphs)
def _greedy_matrix_nms(xyxy, valid, same_group, iou_thres, method, beta):
    """Greedy NMS over score-sorted candidates, all images at once.

    `keep_i = valid_i and not any_{j < i} (keep_j and S_ji)`: a loop over the
    K candidate positions (not over boxes of data), each step O(B K).
    """
    k = xyxy.shape[1]
    suppress = _pairwise_suppression(xyxy, iou_thres, method, beta)
    suppress = suppress & same_group
    later = tf.range(k)[None, :] > tf.range(k)[:, None]  # j after i
    suppress = suppress & later[None]

    def body(i, keep):
        row = tf.gather(suppress, i, axis=1)  # (B, K): what i would remove
        alive = tf.gather(keep, i, axis=1)[:, None]
        return i + 1, keep & ~(row & alive)

    # Valid candidates come first (sorted by score): stop after the last.
    last = tf.reduce_max(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1))
    _, keep = tf.while_loop(lambda i, keep: i < last, body,
                            (tf.constant(0), valid),
                            maximum_iterations=k)
    return keep


def _greedy_kernel_nms(xyxy, scores, valid, iou_thres, max_det):
    """torchvision-equivalent IoU NMS through TF's NMS kernel (V4), per image."""

    def one(args):
        b, s, v = args
        s = tf.where(v, s, -1.0)
        index, count = tf.raw_ops.NonMaxSuppressionV4(
            boxes=b, scores=s, max_output_size=max_det,
            iou_threshold=iou_thres, score_threshold=-0.5,
            pad_to_max_output_size=True,
        )
        # Static shapes for XLA: scatter all max_det slots, the padded ones
        # (index 0) with weight 0.
        real = tf.cast(tf.range(max_det) < count, tf.int32)
        hits = tf.scatter_nd(index[:, None], real, [b.shape[0]])
        return hits > 0

    if xyxy.shape[0] == 1:
        # Static batch of one (TFLite exports): no loop. TFLite's int8
        # calibrator crashes on the WHILE loop a map_fn becomes.
        return one((xyxy[0], scores[0], valid[0]))[None]
    return tf.map_fn(one, (xyxy, scores, valid),
                     fn_output_signature=tf.TensorSpec([xyxy.shape[1]],
                                                       tf.bool))


@tf.autograph.experimental.do_not_convert  # no tensor-dependent Python flow
def non_max_suppression(predictions, conf_thres=0.25, iou_thres=0.45,
                        classes=None, agnostic=False, multi_label=False,
                        max_det=300, max_candidates=None, method="iou",
                        beta=DIOU_BETA, bounding_box_format="center_xywh",
                        class_offset=None, image_shape=None):
    """ultralytics yolov5's NMS as fixed-size tensors.

    score `s_c = p_o * p_c`; candidates `p_o > conf_thres` and
    `s_c > conf_thres`; greedy NMS per class (or agnostic) on `iou` (or DIoU
    `IoU - (rho²/c²)^beta`) `> iou_thres`; at most `max_det` per image.

    Args:
        predictions: a decode layer's output, `{"boxes": (B, N, 4),
            "objectness": (B, N), "class_probs": (B, N, C)}`; static N and C.
        conf_thres: objectness and score threshold (ultralytics 0.25; 0.001
            for mAP evaluation).
        iou_thres: suppression threshold.
        classes: optional list of class ids to keep.
        agnostic: one NMS over all classes instead of one per class.
        multi_label: a box may be returned once for every class whose score
            passes `conf_thres` (ultralytics disables it when C == 1).
        max_det: K, detections kept (and rows returned) per image.
        max_candidates: most candidates (by score) entering NMS per image;
            default ultralytics' `max_nms` (30000) for `"iou"` and 3000 for
            `"diou"`, which builds a `(B, K', K')` suppression matrix.
        method: `"iou"` (torchvision / ultralytics) or `"diou"` (YOLOv4).
        beta: DIoU-NMS exponent on `rho²/c²` (darknet `beta_nms`).
        bounding_box_format: format of `predictions["boxes"]` and of the
            returned boxes.
        class_offset: per-class shift used to separate classes for the
            `"iou"` method; default ultralytics' 7680 for pixel formats and
            (coordinate span + 1) for relative formats.
        image_shape: optional `(height, width)` of the input image: the
            returned boxes are clipped to it (pass `(1, 1)` for `rel_`
            formats), as ultralytics' `scale_boxes` clips after NMS. Off by
            default, which keeps ultralytics' NMS output exactly.

    Returns:
        `{"boxes": (B, K, 4) float32, "scores": (B, K) float32,
        "classes": (B, K) int32, "num_detections": (B,) int32}`, rows in
        decreasing score, padded with -1.

    Example:
        >>> decoded = YoloV5Decode(anchors=YOLOV5_ANCHORS)(raw_outputs)
        >>> det = non_max_suppression(decoded, conf_thres=0.001,
        ...                           iou_thres=0.6, max_det=300)
    """
    check_unit_interval(conf_thres=conf_thres, iou_thres=iou_thres)
    if method not in ("iou", "diou"):
        raise ValueError(f"`method` must be 'iou' or 'diou'; got {method!r}.")
    if int(max_det) < 1:
        raise ValueError(f"`max_det` must be >= 1; got {max_det!r}.")
    if max_candidates is None:
        max_candidates = MAX_NMS if method == "iou" else MAX_DIOU_CANDIDATES
    if int(max_candidates) < 1:
        raise ValueError(
            f"`max_candidates` must be >= 1; got {max_candidates!r}.")
    if not isinstance(predictions, dict) or not {
            "boxes", "objectness", "class_probs"} <= set(predictions):
        raise ValueError(
            "`predictions` must be a dict with 'boxes', 'objectness' and "
            f"'class_probs'; got {type(predictions).__name__} "
            f"{sorted(predictions) if isinstance(predictions, dict) else ''}."
        )
    check_format(bounding_box_format)
    boxes = tf.cast(predictions["boxes"], tf.float32)
    objectness = tf.cast(predictions["objectness"], tf.float32)
    class_probs = tf.cast(predictions["class_probs"], tf.float32)
    max_det = int(max_det)

    box_index, class_index, scores, valid = _candidates(
        objectness, class_probs, float(conf_thres), multi_label, classes,
        int(max_candidates))
    # ultralytics: `xywh2xyxy`, then boxes of class c shifted by c * max_wh.
    xyxy = box_ops.convert(boxes, bounding_box_format,
                           "rel_xyxy" if bounding_box_format.startswith("rel_")
                           else "xyxy")
    cand_xyxy = tf.gather(xyxy, box_index, batch_dims=1)
    if method == "iou":
        shifted = cand_xyxy
        if not agnostic:
            offset = class_offset
            if offset is None:
                if bounding_box_format.startswith("rel_"):
                    offset = (tf.reduce_max(cand_xyxy)
                              - tf.reduce_min(cand_xyxy) + 1.0)
                else:
                    offset = MAX_WH
            shifted = cand_xyxy + tf.cast(class_index, tf.float32)[
                ..., None] * offset
        keep = _greedy_kernel_nms(shifted, scores, valid, float(iou_thres),
                                  max_det)
    else:
        same = tf.ones_like(valid[:, :, None] & valid[:, None, :])
        if not agnostic:
            same = class_index[:, :, None] == class_index[:, None, :]
        keep = _greedy_matrix_nms(cand_xyxy, valid, same, float(iou_thres),
                                  method, float(beta))

    # The first max_det kept candidates (they are sorted by score).
    rank = tf.cumsum(tf.cast(keep, tf.int32), axis=1) - 1
    keep = keep & (rank < max_det)
    num = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    slot = tf.where(keep, rank, max_det)  # dropped rows go to a spare slot
    batch = tf.shape(keep)[0]
    k = keep.shape[1]
    rows = tf.broadcast_to(tf.range(batch)[:, None], [batch, k])
    target = tf.stack([rows, slot], axis=-1)

    def place(values, fill):
        shape = tf.concat([[batch, max_det + 1], tf.shape(values)[2:]], 0)
        out = tf.fill(shape, tf.cast(fill, values.dtype))
        out = tf.tensor_scatter_nd_update(out, target, values)
        return out[:, :max_det]

    picked = tf.gather(boxes, box_index, batch_dims=1)
    if image_shape is not None:
        picked = clip_boxes(picked, bounding_box_format, image_shape)
    out_boxes = place(picked, _PAD)
    out_scores = place(scores, _PAD)
    out_classes = place(class_index, _PAD)
    # The spare slot receives many rows; pad it back explicitly.
    filled = tf.range(max_det)[None, :] < num[:, None]
    return {
        "boxes": tf.where(filled[..., None], out_boxes, float(_PAD)),
        "scores": tf.where(filled, out_scores, float(_PAD)),
        "classes": tf.where(filled, out_classes, _PAD),
        "num_detections": num,
    }


def clip_boxes(boxes, bounding_box_format, image_shape):
    """Boxes `(..., 4)` clipped to an image of `image_shape` `(height, width)`
    (in the units of `bounding_box_format`: `(1, 1)` for `rel_` formats).

    Example:
        >>> clip_boxes([[-5., 10., 700., 90.]], "xyxy", (480, 640))
        [[0., 10., 640., 90.]]
    """
    check_format(bounding_box_format)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    corner = "rel_xyxy" if bounding_box_format.startswith("rel_") else "xyxy"
    xyxy = box_ops.convert(boxes, bounding_box_format, corner)
    height = tf.cast(image_shape[0], tf.float32)
    width = tf.cast(image_shape[1], tf.float32)
    upper = tf.stack([width, height, width, height])
    xyxy = tf.clip_by_value(xyxy, 0.0, upper)
    return box_ops.convert(xyxy, corner, bounding_box_format)


def __getattr__(name):
    # `keras_yolo.postprocess.NonMaxSuppression` was the layer's first home;
    # it lives in keras_yolo.layers now (same registered name).
    if name == "NonMaxSuppression":
        from keras_yolo.layers.non_max_suppression import NonMaxSuppression
        return NonMaxSuppression
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
