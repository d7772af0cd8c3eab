"""Float64 numpy reference of the YOLOv4 objective, written from the definitions.

`darknet_deltas` transcribes AlexeyAB darknet's `src/yolo_layer.c`
(`process_batch`, `delta_yolo_box`, `delta_yolo_class`,
`averages_yolo_deltas`, `compare_yolo_class`, `get_yolo_box`) and `src/box.c`
(`box_iou`, `dx_box_iou`) with the same loops over images, cells, anchors and
truths, so it shares no code or vectorisation with keras_yolo. `seed_loss`
writes the seed's YOLOv4 formula with its own CIoU.

Truths are `(B, M, 4)` relative `(x, y, w, h)` with labels `(B, M)`, -1 for
padding; raw outputs are a list of `(B, H, W, A, 5 + C)` arrays.
"""

import math

import numpy as np

from references import sigmoid


# --- box.c -------------------------------------------------------------------
def overlap(x1, w1, x2, w2):
    left = max(x1 - w1 / 2, x2 - w2 / 2)
    right = min(x1 + w1 / 2, x2 + w2 / 2)
    return right - left


def box_iou(a, b):
    w = overlap(a[0], a[2], b[0], b[2])
    h = overlap(a[1], a[3], b[1], b[3])
    inter = 0.0 if (w < 0 or h < 0) else w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    if inter == 0 or union == 0:
        return 0.0
    return inter / union


def _div(a, b):
    # box.c divides by zero only for degenerate boxes; yolo_layer.c then
    # replaces the NaN/Inf by 0.
    return a / b if b != 0 else float("nan")


def dx_box_iou(pred, truth, kind):
    """box.c's dx_box_iou: returns (p_dx, p_dy, p_dw, p_dh)."""
    px, py, pw, ph = pred
    tx, ty, tw, th = truth
    top, bot, left, right = py - ph / 2, py + ph / 2, px - pw / 2, px + pw / 2
    pred_t, pred_b = min(top, bot), max(top, bot)
    pred_l, pred_r = min(left, right), max(left, right)
    t_top, t_bot, t_left, t_right = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    X = (pred_b - pred_t) * (pred_r - pred_l)
    Xhat = (t_bot - t_top) * (t_right - t_left)
    Ih = min(pred_b, t_bot) - max(pred_t, t_top)
    Iw = min(pred_r, t_right) - max(pred_l, t_left)
    I = Iw * Ih
    U = X + Xhat - I
    S = (px - tx) ** 2 + (py - ty) ** 2
    giou_Cw = max(pred_r, t_right) - min(pred_l, t_left)
    giou_Ch = max(pred_b, t_bot) - min(pred_t, t_top)
    giou_C = giou_Cw * giou_Ch
    dX_wrt_t, dX_wrt_b = -(pred_r - pred_l), pred_r - pred_l
    dX_wrt_l, dX_wrt_r = -(pred_b - pred_t), pred_b - pred_t
    dI_wrt_t = -Iw if pred_t > t_top else 0.0
    dI_wrt_b = Iw if pred_b < t_bot else 0.0
    dI_wrt_l = -Ih if pred_l > t_left else 0.0
    dI_wrt_r = Ih if pred_r < t_right else 0.0
    dU_wrt_t, dU_wrt_b = dX_wrt_t - dI_wrt_t, dX_wrt_b - dI_wrt_b
    dU_wrt_l, dU_wrt_r = dX_wrt_l - dI_wrt_l, dX_wrt_r - dI_wrt_r
    dC_wrt_t = -giou_Cw if pred_t < t_top else 0.0
    dC_wrt_b = giou_Cw if pred_b > t_bot else 0.0
    dC_wrt_l = -giou_Ch if pred_l < t_left else 0.0
    dC_wrt_r = giou_Ch if pred_r > t_right else 0.0
    p_dt = p_db = p_dl = p_dr = 0.0
    if U > 0:
        p_dt = ((U * dI_wrt_t) - (I * dU_wrt_t)) / (U * U)
        p_db = ((U * dI_wrt_b) - (I * dU_wrt_b)) / (U * U)
        p_dl = ((U * dI_wrt_l) - (I * dU_wrt_l)) / (U * U)
        p_dr = ((U * dI_wrt_r) - (I * dU_wrt_r)) / (U * U)
    p_dt = p_dt if top < bot else p_db
    p_db = p_db if top < bot else p_dt
    p_dl = p_dl if left < right else p_dr
    p_dr = p_dr if left < right else p_dl
    if kind == "giou":
        C2 = giou_C * giou_C
        if giou_C > 0:
            p_dt += _div((giou_C * dU_wrt_t) - (U * dC_wrt_t), C2)
            p_db += _div((giou_C * dU_wrt_b) - (U * dC_wrt_b), C2)
            p_dl += _div((giou_C * dU_wrt_l) - (U * dC_wrt_l), C2)
            p_dr += _div((giou_C * dU_wrt_r) - (U * dC_wrt_r), C2)
        if Iw <= 0 or Ih <= 0:
            p_dt = _div((giou_C * dU_wrt_t) - (U * dC_wrt_t), C2)
            p_db = _div((giou_C * dU_wrt_b) - (U * dC_wrt_b), C2)
            p_dl = _div((giou_C * dU_wrt_l) - (U * dC_wrt_l), C2)
            p_dr = _div((giou_C * dU_wrt_r) - (U * dC_wrt_r), C2)
    Ct = min(py - ph / 2, ty - th / 2)
    Cb = max(py + ph / 2, ty + th / 2)
    Cl = min(px - pw / 2, tx - tw / 2)
    Cr = max(px + pw / 2, tx + tw / 2)
    Cw, Ch = Cr - Cl, Cb - Ct
    C = Cw * Cw + Ch * Ch
    dCt_dy = 1.0 if pred_t < t_top else 0.0
    dCt_dh = -0.5 if pred_t < t_top else 0.0
    dCb_dy = 1.0 if pred_b > t_bot else 0.0
    dCb_dh = 0.5 if pred_b > t_bot else 0.0
    dCl_dx = 1.0 if pred_l < t_left else 0.0
    dCl_dw = -0.5 if pred_l < t_left else 0.0
    dCr_dx = 1.0 if pred_r > t_right else 0.0
    dCr_dw = 0.5 if pred_r > t_right else 0.0
    dCw_dx, dCw_dy, dCw_dw, dCw_dh = dCr_dx - dCl_dx, 0.0, dCr_dw - dCl_dw, 0.0
    dCh_dx, dCh_dy, dCh_dw, dCh_dh = 0.0, dCb_dy - dCt_dy, 0.0, dCb_dh - dCt_dh
    p_dx = p_dl + p_dr
    p_dy = p_dt + p_db
    p_dw = p_dr - p_dl
    p_dh = p_db - p_dt
    if kind in ("diou", "ciou"):
        CC = C * C
        dist_x = _div(2 * (tx - px) * C - (2 * Cw * dCw_dx + 2 * Ch * dCh_dx) * S, CC)
        dist_y = _div(2 * (ty - py) * C - (2 * Cw * dCw_dy + 2 * Ch * dCh_dy) * S, CC)
        dist_w = _div((2 * Cw * dCw_dw + 2 * Ch * dCh_dw) * S, CC)
        dist_h = _div((2 * Cw * dCw_dh + 2 * Ch * dCh_dh) * S, CC)
        if kind == "ciou":
            ar_gt, ar_pred = tw / th, pw / ph
            d_atan = math.atan(ar_gt) - math.atan(ar_pred)
            ar_loss = 4 / (math.pi * math.pi) * d_atan * d_atan
            alpha = ar_loss / (1 - I / U + ar_loss + 0.000001)
            ar_dw = 8 / (math.pi * math.pi) * d_atan * ph
            ar_dh = -8 / (math.pi * math.pi) * d_atan * pw
            dist_w += alpha * ar_dw
            dist_h += alpha * ar_dh
        if C > 0:
            p_dx += dist_x
            p_dy += dist_y
            p_dw += dist_w
            p_dh += dist_h
        if Iw <= 0 or Ih <= 0:
            p_dx, p_dy, p_dw, p_dh = dist_x, dist_y, dist_w, dist_h
    return p_dx, p_dy, p_dw, p_dh


# --- yolo_layer.c ----------------------------------------------------------------
def _fix(v):
    return 0.0 if (math.isnan(v) or math.isinf(v)) else v


def _clip(v, max_delta):
    return min(max(v, -max_delta), max_delta)


def darknet_deltas(raws, truths, labels, anchors, strides, scale_x_y,
                   iou_normalizer=0.07, obj_normalizer=1.0, iou_thresh=0.213,
                   ignore_thresh=0.7, iou_loss="ciou", max_delta=5.0,
                   label_smooth_eps=0.0, max_boxes=200):
    """darknet's `l.delta` of every yolo layer, shaped like `raws`.

    Returns (deltas, stats) where stats counts the (truth, anchor) pairs.
    """
    all_anchors = [a for level in anchors for a in level]
    per_level = len(anchors[0])
    deltas, num_pairs, shared = [], 0, 0
    for level, raw in enumerate(raws):
        raw = np.asarray(raw, np.float64)
        batch, lh, lw, num, channels = raw.shape
        classes = channels - 5
        s = scale_x_y[level]
        out = sigmoid(raw)
        out[..., 0:2] = out[..., 0:2] * s - 0.5 * (s - 1)
        out[..., 2:4] = raw[..., 2:4]
        net_w, net_h = lw * strides[level], lh * strides[level]
        mask = list(range(level * per_level, (level + 1) * per_level))
        delta = np.zeros_like(raw)

        def get_box(b, j, i, n, anchor):
            return ((i + out[b, j, i, n, 0]) / lw, (j + out[b, j, i, n, 1]) / lh,
                    math.exp(out[b, j, i, n, 2]) * anchor[0] / net_w,
                    math.exp(out[b, j, i, n, 3]) * anchor[1] / net_h)

        def delta_box(truth, b, j, i, n, anchor):
            pred = list(get_box(b, j, i, n, anchor))
            if pred[2] == 0:
                pred[2] = 1.0
            if pred[3] == 0:
                pred[3] = 1.0
            dx, dy, dw, dh = dx_box_iou(pred, truth, iou_loss)
            dw *= math.exp(out[b, j, i, n, 2])
            dh *= math.exp(out[b, j, i, n, 3])
            d = [_fix(v * iou_normalizer) for v in (dx, dy, dw, dh)]
            if max_delta is not None:
                d = [_clip(v, max_delta) for v in d]
            if np.any(delta[b, j, i, n, 0:4] != 0):
                nonlocal shared
                shared += 1
            delta[b, j, i, n, 0:4] += d

        def delta_class(b, j, i, n, class_id):
            y1 = 1.0 * (1 - label_smooth_eps) + 0.5 * label_smooth_eps
            if delta[b, j, i, n, 5 + class_id]:
                delta[b, j, i, n, 5 + class_id] = y1 - out[b, j, i, n, 5 + class_id]
                return
            for c in range(classes):
                y = 1.0 if c == class_id else 0.0
                y = y * (1 - label_smooth_eps) + 0.5 * label_smooth_eps
                delta[b, j, i, n, 5 + c] = y - out[b, j, i, n, 5 + c]

        for b in range(batch):
            ts = [t for t in range(min(truths.shape[1], max_boxes))
                  if 0 <= labels[b, t] < classes]
            for j in range(lh):
                for i in range(lw):
                    for n in range(num):
                        pred = get_box(b, j, i, n, all_anchors[mask[n]])
                        best_match_iou = 0.0
                        match = any(out[b, j, i, n, 5 + c] > 0.25
                                    for c in range(classes))
                        for t in ts:
                            iou = box_iou(pred, truths[b, t])
                            if iou > best_match_iou and match:
                                best_match_iou = iou
                        delta[b, j, i, n, 4] = obj_normalizer * (0 - out[b, j, i, n, 4])
                        if best_match_iou > ignore_thresh:
                            delta[b, j, i, n, 4] = 0
            for t in ts:
                truth = truths[b, t]
                class_id = int(labels[b, t])
                i = min(int(truth[0] * lw), lw - 1)
                j = min(int(truth[1] * lh), lh - 1)
                shift = (0.0, 0.0, truth[2], truth[3])
                best_iou, best_n = 0.0, 0
                for n, anchor in enumerate(all_anchors):
                    iou = box_iou((0.0, 0.0, anchor[0] / net_w, anchor[1] / net_h), shift)
                    if iou > best_iou:
                        best_iou, best_n = iou, n
                for n, anchor in enumerate(all_anchors):
                    if n not in mask:
                        continue
                    if n == best_n:
                        chosen = True
                    else:
                        iou = box_iou((0.0, 0.0, anchor[0] / net_w, anchor[1] / net_h), shift)
                        chosen = iou_thresh < 1.0 and iou > iou_thresh
                    if not chosen:
                        continue
                    mask_n = mask.index(n)
                    num_pairs += 1
                    delta_box(truth, b, j, i, mask_n, anchor)
                    delta[b, j, i, mask_n, 4] = obj_normalizer * (1 - out[b, j, i, mask_n, 4])
                    delta_class(b, j, i, mask_n, class_id)
            if iou_thresh < 1.0:
                for j in range(lh):
                    for i in range(lw):
                        for n in range(num):
                            if delta[b, j, i, n, 4] != 0:
                                k = int(np.sum(delta[b, j, i, n, 5:] > 0))
                                if k > 0:
                                    delta[b, j, i, n, 0:4] /= k
        deltas.append(delta)
    return deltas, {"pairs": num_pairs, "shared": shared}


# --- the seed's formula ------------------------------------------------------------
def ciou(a, b, kind="ciou", alpha=None):
    """IoU / GIoU / DIoU / CIoU of two centre boxes (CIoU paper, alpha = v / (1 - IoU + v)).

    Returns (value, alpha); pass `alpha` to hold it fixed (the paper treats it
    as a constant in the gradient).
    """
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw = max(min(ax2, bx2) - max(ax1, bx1), 0.0)
    ih = max(min(ay2, by2) - max(ay1, by1), 0.0)
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    iou = inter / union
    cw = max(ax2, bx2) - min(ax1, bx1)
    ch = max(ay2, by2) - min(ay1, by1)
    if kind == "iou":
        return iou, None
    if kind == "giou":
        return iou - (cw * ch - union) / (cw * ch), None
    diou = iou - ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) / (cw ** 2 + ch ** 2)
    if kind == "diou":
        return diou, None
    v = 4 / math.pi ** 2 * (math.atan(b[2] / b[3]) - math.atan(a[2] / a[3])) ** 2
    if alpha is None:
        alpha = v / (1 - iou + v)
    return diou - alpha * v, alpha


def bce(target, logit):
    return max(logit, 0) - logit * target + math.log1p(math.exp(-abs(logit)))


def seed_loss(raws, truths, labels, anchors, strides, scale_x_y,
              lambda_coord=0.07, lambda_obj=1.0, lambda_class=1.0,
              iou_thresh=0.213, ignore_thresh=0.7, iou_loss="ciou",
              label_smoothing=0.0, alphas=None):
    """The seed's L (box, obj, cls), each summed per image and divided by B.

    `alphas`: a dict that keeps CIoU's alpha of each (truth, anchor) pair
    from the first call, so finite differences hold it constant.

    Box IoUs in pixels; responsible anchors: the best shape IoU over all
    levels plus every anchor above `iou_thresh`; ignored negatives: best IoU
    of the predicted box with any truth above `ignore_thresh`.
    """
    all_anchors = [a for level in anchors for a in level]
    per_level = len(anchors[0])
    batch = raws[0].shape[0]
    box_sum = obj_sum = cls_sum = 0.0
    eps = label_smoothing
    for level, raw in enumerate(raws):
        raw = np.asarray(raw, np.float64)
        _, lh, lw, num, channels = raw.shape
        classes = channels - 5
        s = scale_x_y[level]
        net_w, net_h = lw * strides[level], lh * strides[level]
        for b in range(batch):
            ts = [t for t in range(truths.shape[1]) if 0 <= labels[b, t] < classes]
            positive = {}
            for t in ts:
                truth = truths[b, t]
                i = min(int(truth[0] * lw), lw - 1)
                j = min(int(truth[1] * lh), lh - 1)
                shift = (0.0, 0.0, truth[2], truth[3])
                ious = [box_iou((0.0, 0.0, a[0] / net_w, a[1] / net_h), shift)
                        for a in all_anchors]
                best = int(np.argmax(ious))
                for n in range(num):
                    k = level * per_level + n
                    if k != best and not (iou_thresh < 1 and ious[k] > iou_thresh):
                        continue
                    positive.setdefault((j, i, n), set()).add(int(labels[b, t]))
                    r = raw[b, j, i, n]
                    anchor = all_anchors[k]
                    pred = ((i + s * sigmoid(r[0]) - (s - 1) / 2) / lw * net_w,
                            (j + s * sigmoid(r[1]) - (s - 1) / 2) / lh * net_h,
                            math.exp(r[2]) * anchor[0], math.exp(r[3]) * anchor[1])
                    tpix = (truth[0] * net_w, truth[1] * net_h,
                            truth[2] * net_w, truth[3] * net_h)
                    key = (level, b, t, n)
                    fixed = None if alphas is None else alphas.get(key)
                    value, alpha = ciou(pred, tpix, iou_loss, fixed)
                    if alphas is not None:
                        alphas[key] = alpha
                    box_sum += lambda_coord * (1 - value)
            for j in range(lh):
                for i in range(lw):
                    for n in range(num):
                        r = raw[b, j, i, n]
                        anchor = all_anchors[level * per_level + n]
                        if (j, i, n) in positive:
                            obj_sum += lambda_obj * bce(1.0, r[4])
                            for c in range(classes):
                                y = 1.0 if c in positive[(j, i, n)] else 0.0
                                y = y * (1 - eps) + 0.5 * eps
                                cls_sum += lambda_class * bce(y, r[5 + c])
                            continue
                        pred = ((i + s * sigmoid(r[0]) - (s - 1) / 2) / lw,
                                (j + s * sigmoid(r[1]) - (s - 1) / 2) / lh,
                                math.exp(r[2]) * anchor[0] / net_w,
                                math.exp(r[3]) * anchor[1] / net_h)
                        best = max([box_iou(pred, truths[b, t]) for t in ts],
                                   default=0.0)
                        if best > ignore_thresh:
                            continue
                        obj_sum += lambda_obj * bce(0.0, r[4])
    return {"box": box_sum / batch, "obj": obj_sum / batch, "cls": cls_sum / batch}


def decode(raw, anchors, stride, scale_x_y):
    """(B, H, W, A, 5 + C) -> relative centre boxes (B, H*W*A, 4), obj, probs."""
    raw = np.asarray(raw, np.float64)
    batch, lh, lw, num, _ = raw.shape
    out = np.zeros((batch, lh, lw, num, 4))
    for j in range(lh):
        for i in range(lw):
            for n in range(num):
                r = raw[:, j, i, n]
                out[:, j, i, n, 0] = (i + scale_x_y * sigmoid(r[:, 0]) - (scale_x_y - 1) / 2) / lw
                out[:, j, i, n, 1] = (j + scale_x_y * sigmoid(r[:, 1]) - (scale_x_y - 1) / 2) / lh
                out[:, j, i, n, 2] = np.exp(r[:, 2]) * anchors[n][0] / (lw * stride)
                out[:, j, i, n, 3] = np.exp(r[:, 3]) * anchors[n][1] / (lh * stride)
    return (out.reshape(batch, -1, 4), sigmoid(raw[..., 4]).reshape(batch, -1),
            sigmoid(raw[..., 5:]).reshape(batch, lh * lw * num, -1))
