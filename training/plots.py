"""PNG figures of a run: loss terms and mAP per epoch, PR curves, the
confusion matrix, and a grid of images with their predicted boxes.

Matplotlib (Agg, no display) draws the charts; the image grid is drawn
with numpy only, so TensorBoard can take it too.

Example:
    >>> plot_results(run.read_history("runs/a"), "runs/a/results.png")
    >>> plot_pr_curve(m["pr_recall"], m["pr_precision"], ["cat", "dog"],
    ...               "runs/a/pr_curve.png")
"""

import numpy as np

# Panels of results.png: (log key, title), the ones a history has.
RESULT_PANELS = (("box", "box loss"), ("obj", "objectness loss"),
                 ("cls", "class loss"), ("dfl", "distribution focal loss"),
                 ("loss", "total loss"),
                 ("lr", "learning rate"), ("val_map50", "mAP@0.5"),
                 ("val_map", "mAP@0.5:0.95"))
# Distinct colours for classes (tab10), as RGB 0..255.
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44],
                    [214, 39, 40], [148, 103, 189], [140, 86, 75],
                    [227, 119, 194], [127, 127, 127], [188, 189, 34],
                    [23, 190, 207]], np.uint8)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_results(history, path):
    """`results.png`: one panel per logged quantity of `RESULT_PANELS`
    against the epoch (points where a value was measured, e.g. mAP only on
    evaluation epochs). Returns the keys drawn."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    keys = [(k, t) for k, t in RESULT_PANELS
            if any(k in h for h in history)]
    if not keys:
        return []
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3 * rows),
                             squeeze=False)
    for ax, (key, title) in zip(axes.flat, keys):
        points = [(h["epoch"], h[key]) for h in history
                  if key in h and h[key] is not None and h[key] >= 0]
        if points:
            x, y = zip(*points)
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.5)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [k for k, _ in keys]


def plot_pr_curve(recall, precision, names, path, iou=0.5):
    """`pr_curve.png`: precision against recall per class (COCOeval's
    interpolated curve at IoU `iou`) and their mean; the legend gives each
    class' AP (area under its curve). Classes without ground truth (a curve
    of -1) are left out."""
    plt = _pyplot()
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    valid = [c for c in range(len(precision)) if (precision[c] >= 0).all()]
    show_each = len(valid) <= 20
    for c in valid:
        ap = precision[c].mean()
        ax.plot(recall, precision[c], linewidth=1,
                label=f"{names[c]} {ap:.3f}" if show_each else None,
                color=None if show_each else "grey",
                alpha=1.0 if show_each else 0.3)
    if valid:
        mean = precision[valid].mean(0)
        ax.plot(recall, mean, linewidth=3, color="blue",
                label=f"all classes {mean.mean():.3f} mAP@{iou}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Precision-recall at IoU {iou}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion_matrix(matrix, names, path, normalize=True):
    """`confusion_matrix.png`: `[predicted, true]` counts (see
    `keras_yolo.metrics.confusion_matrix`), each true column normalised to
    1 when `normalize`; the last row/column is background."""
    plt = _pyplot()
    matrix = np.asarray(matrix, np.float64)
    shown = matrix / np.maximum(matrix.sum(0, keepdims=True), 1e-9) \
        if normalize else matrix
    labels = list(names) + ["background"]
    n = len(labels)
    size = min(max(5, 0.45 * n + 3), 16)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0,
                      vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        ax.set_xticks(range(n), labels, rotation=90)
        ax.set_yticks(range(n), labels)
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, f"{shown[i, j]:.2f}" if normalize
                            else f"{int(matrix[i, j])}", ha="center",
                            va="center", fontsize=8,
                            color="white" if shown[i, j] > 0.5 *
                            np.nanmax(shown) else "black")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title("Confusion matrix" + (" (columns normalised)"
                                       if normalize else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prediction_grid(images, boxes, classes, num_detections, cols=4,
                    scores=None, min_score=0.25, thickness=1, min_size=None):
    """Tiles `images` into one picture with each image's boxes drawn.

    Args:
        images: `(B, H, W, 3)` floats in [0, 1] (or uint8).
        boxes: `(B, K, 4)` `rel_xyxy` boxes.
        classes: `(B, K)` class ids (colour per class); -1 pads.
        num_detections: `(B,)` valid rows.
        scores: `(B, K)`; boxes scoring below `min_score` are not drawn.
        min_size: enlarge small images (by an integer factor, nearest
            neighbour) to at least this many pixels on their long side.

    Returns:
        `(rows * H, cols * W, 3)` uint8.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = (np.clip(images, 0, 1) * 255).astype(np.uint8)
    b, h, w, _ = images.shape
    if min_size and max(h, w) < min_size:
        factor = -(-int(min_size) // max(h, w))
        images = images.repeat(factor, 1).repeat(factor, 2)
        b, h, w, _ = images.shape
    images = images.copy()
    boxes = np.asarray(boxes, np.float64)
    classes = np.asarray(classes)
    for i in range(b):
        for j in range(int(num_detections[i])):
            if classes[i, j] < 0 or (scores is not None and
                                     scores[i, j] < min_score):
                continue
            color = PALETTE[int(classes[i, j]) % len(PALETTE)]
            x0, y0, x1, y1 = boxes[i, j] * [w, h, w, h]
            x0, x1 = np.clip([x0, x1], 0, w - 1).astype(int)
            y0, y1 = np.clip([y0, y1], 0, h - 1).astype(int)
            t = thickness
            images[i, y0:y0 + t, x0:x1 + 1] = color
            images[i, max(y1 - t + 1, 0):y1 + 1, x0:x1 + 1] = color
            images[i, y0:y1 + 1, x0:x0 + t] = color
            images[i, y0:y1 + 1, max(x1 - t + 1, 0):x1 + 1] = color
    cols = max(1, min(cols, b))
    rows = -(-b // cols)
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i in range(b):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    return grid
