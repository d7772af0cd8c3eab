"""Accuracy of keras-yolo against ultralytics yolov5, both trained from scratch on the same files.

    .venv/bin/python benchmarks/quality_vs_ultralytics.py --dataset raccoon --epochs 30 \
        --image-size 320 --batch-size 16 [--out runs/quality]

Both sides train yolov5n from scratch with their own defaults (ultralytics: `train.py` with
hyp.scratch-low; keras-yolo: `python -m training train --augment`) on the same images, image
size, epochs and batch size, one after the other (nothing else should run: PEERS.md). Both are
then scored by ONE evaluator: pycocotools on boxes in original pixels, conf 0.001, NMS IoU 0.6,
at most 300 detections, each image letterboxed to the same square input. keras-yolo's detections
come from its exported SavedModel (`serving_default`, JPEG bytes in), ultralytics' from its
`last.pt` (EMA weights) with its own `non_max_suppression`.

Datasets: `raccoon` (../shared/datasets/raccoon, 160 train / 40 test photos), `coco128`
(train = val, as ultralytics' smoke test), `shapes` (keras-yolo's synthetic set written to files).
Prints both mAPs, their ratio and the wall-time ratio, and writes `<out>/<dataset>_e<E>.json`.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "datasets")
PYTHON = sys.executable
CONF, IOU, MAX_DET = 0.001, 0.6, 300


def _link_split(images, root, split):
    """Mirrors `images` (and their YOLO labels) under root/images|labels/split."""
    image_dir = os.path.join(root, "images", split)
    label_dir = os.path.join(root, "labels", split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    for image in images:
        name = os.path.basename(image)
        target = os.path.join(image_dir, name)
        if not os.path.exists(target):
            os.symlink(os.path.abspath(image), target)
        label = os.path.splitext(image.replace(f"{os.sep}images{os.sep}",
                                               f"{os.sep}labels{os.sep}"))[0] + ".txt"
        if os.path.exists(label):
            shutil.copyfile(label, os.path.join(label_dir, os.path.splitext(name)[0] + ".txt"))
    return image_dir


def prepare(dataset, work, shapes_images=300):
    """Writes `work/data.yaml` (ultralytics layout, absolute paths); returns
    (yaml path, class names, val image paths)."""
    root = os.path.join(work, "data")
    if dataset == "raccoon":
        src = os.path.join(SHARED, "raccoon")
        split = {s: [os.path.join(src, line.strip()) for line in open(os.path.join(src, "splits", f"{f}.txt"))
                     if line.strip()] for s, f in (("train", "train"), ("val", "test"))}
        names = ["raccoon"]
    elif dataset == "coco128":
        src = os.path.join(SHARED, "coco128")
        images = sorted(glob.glob(os.path.join(src, "images", "train2017", "*.jpg")))
        split = {"train": images, "val": images}
        import yaml

        config = yaml.safe_load(open(os.path.join(src, "coco128.yaml")))
        names = [config["names"][i] for i in range(len(config["names"]))]
    elif dataset == "shapes":
        names = write_shapes(root, shapes_images)
        split = {s: sorted(glob.glob(os.path.join(root, "images", s, "*.png"))) for s in ("train", "val")}
    else:
        raise ValueError(f"--dataset must be raccoon, coco128 or shapes; got {dataset!r}")
    dirs = {s: _link_split(split[s], root, s) if dataset != "shapes" else os.path.join(root, "images", s)
            for s in ("train", "val")}
    path = os.path.join(work, "data.yaml")
    with open(path, "w") as f:
        json.dump({"path": root, "train": dirs["train"], "val": dirs["val"],
                   "nc": len(names), "names": names}, f)   # JSON is YAML
    return path, names, sorted(glob.glob(os.path.join(dirs["val"], "*")))


def write_shapes(root, count, size=320, num_classes=3):
    """The synthetic shapes set as PNG files and YOLO labels, 80/20 split."""
    import keras_yolo
    from PIL import Image

    ds = keras_yolo.data.shapes(num_images=count, image_size=size, num_classes=num_classes,
                                max_boxes=20, seed=0, bounding_box_format="rel_center_xywh")
    for i, (image, y) in enumerate(ds.as_numpy_iterator()):
        split = "train" if i < int(0.8 * count) else "val"
        os.makedirs(os.path.join(root, "images", split), exist_ok=True)
        os.makedirs(os.path.join(root, "labels", split), exist_ok=True)
        Image.fromarray((image * 255).round().astype(np.uint8)).save(
            os.path.join(root, "images", split, f"{i:05d}.png"))
        rows = [f"{int(l)} {b[0]:.6f} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f}"
                for b, l in zip(y["boxes"], y["labels"]) if l >= 0]
        with open(os.path.join(root, "labels", split, f"{i:05d}.txt"), "w") as f:
            f.write("\n".join(rows) + ("\n" if rows else ""))
    return [f"class_{i}" for i in range(num_classes)]


def coco_ground_truth(val_images):
    """COCO dict of the YOLO labels of `val_images`, in original pixels."""
    from PIL import Image

    images, annotations = [], []
    for image_id, path in enumerate(val_images):
        width, height = Image.open(path).size
        images.append({"id": image_id, "file_name": os.path.basename(path), "width": width, "height": height})
        label = os.path.splitext(path.replace(f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"))[0] + ".txt"
        if not os.path.exists(label):
            continue
        for row in open(label).read().split("\n"):
            if not row.strip():
                continue
            c, x, y, w, h = (float(v) for v in row.split())
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(c),
                                "bbox": [(x - w / 2) * width, (y - h / 2) * height, w * width, h * height],
                                "area": w * width * h * height, "iscrowd": 0})
    return images, annotations


def coco_map(val_images, detections, num_classes):
    """(mAP@0.5, mAP@0.5:0.95) of `detections` [(image_id, xyxy, score, class)]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations = coco_ground_truth(val_images)
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": i} for i in range(num_classes)]}
    gt.createIndex()
    results = [{"image_id": i, "category_id": int(c), "score": float(s),
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
               for i, b, s, c in detections]
    if not results:
        return 0.0, 0.0
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[1]), float(evaluator.stats[0])


def train_ours(yaml_path, run_dir, args):
    command = [PYTHON, "-m", "training", "train", "--version", "v5", "--model", "yolov5n",
               "--data", yaml_path, "--image-size", str(args.image_size), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--augment", "--seed", str(args.seed),
               "--out", run_dir, "--overwrite"]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    export = os.path.join(run_dir, "export_quality")
    subprocess.run([PYTHON, "-m", "serving", "export", "--model", os.path.join(run_dir, "model.keras"),
                    "--out", export, "--conf", str(CONF), "--iou", str(IOU), "--max-det", str(MAX_DET)],
                   check=True, cwd=ROOT)
    return seconds, export


def detect_ours(export, val_images):
    import tensorflow as tf

    model = tf.saved_model.load(os.path.join(export, "saved_model"))
    serve = model.signatures["serving_default"]
    detections = []
    for image_id, path in enumerate(val_images):
        out = serve(images=tf.constant([open(path, "rb").read()]))
        n = int(out["num_detections"][0])
        for b, s, c in zip(out["boxes"][0][:n].numpy(), out["scores"][0][:n].numpy(),
                           out["classes"][0][:n].numpy()):
            detections.append((image_id, b, s, c))
    return detections


def train_peer(yaml_path, project, args):
    start = time.perf_counter()
    subprocess.run([PYTHON, os.path.join(HERE, "yolov5_train_peer.py"), "--data", yaml_path,
                    "--img", str(args.image_size), "--batch-size", str(args.batch_size),
                    "--epochs", str(args.epochs), "--project", project, "--name", "peer",
                    "--seed", str(args.seed)], check=True, cwd=ROOT)
    return time.perf_counter() - start, os.path.join(project, "peer", "weights", "last.pt")


def detect_peer(checkpoint, val_images, image_size):
    sys.path.insert(0, HERE)
    import yolov5_train_peer

    yolov5_train_peer.load_train()
    import torch
    from PIL import Image
    from yolov5.utils.augmentations import letterbox
    from yolov5.utils.general import non_max_suppression, scale_boxes

    model = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = (model.get("ema") or model["model"]).float().eval()
    detections = []
    for image_id, path in enumerate(val_images):
        original = np.asarray(Image.open(path).convert("RGB"))
        boxed = letterbox(original, image_size, auto=False)[0]
        x = torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1)))[None].float() / 255
        with torch.no_grad():
            pred = model(x)[0]
        det = non_max_suppression(pred, CONF, IOU, max_det=MAX_DET)[0]
        det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], original.shape).round()
        for *xyxy, score, cls in det.numpy():
            detections.append((image_id, np.array(xyxy), score, cls))
    return detections


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="raccoon", choices=["raccoon", "coco128", "shapes"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "quality"))
    parser.add_argument("--skip", choices=["ours", "peer"], help="reuse that side's finished run")
    args = parser.parse_args(argv)
    work = os.path.abspath(os.path.join(args.out, f"{args.dataset}_e{args.epochs}"))
    os.makedirs(work, exist_ok=True)
    yaml_path, names, val_images = prepare(args.dataset, work)
    load = os.getloadavg()
    our_run = os.path.join(work, "ours")
    if args.skip == "ours":
        our_seconds, export = float("nan"), os.path.join(our_run, "export_quality")
    else:
        our_seconds, export = train_ours(yaml_path, our_run, args)
    if args.skip == "peer":
        peer_seconds, checkpoint = float("nan"), os.path.join(work, "peer", "weights", "last.pt")
    else:
        peer_seconds, checkpoint = train_peer(yaml_path, work, args)
    ours = coco_map(val_images, detect_ours(export, val_images), len(names))
    peer = coco_map(val_images, detect_peer(checkpoint, val_images, args.image_size), len(names))
    report = {
        "dataset": args.dataset, "epochs": args.epochs, "image_size": args.image_size,
        "batch_size": args.batch_size, "val_images": len(val_images), "load_average_at_start": load,
        "ours": {"map50": ours[0], "map": ours[1], "seconds": our_seconds},
        "ultralytics": {"map50": peer[0], "map": peer[1], "seconds": peer_seconds},
        "ratio_map50": ours[0] / peer[0] if peer[0] else float("inf"),
        "ratio_map": ours[1] / peer[1] if peer[1] else float("inf"),
        "ratio_seconds": our_seconds / peer_seconds,
    }
    with open(os.path.join(args.out, f"{args.dataset}_e{args.epochs}.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"{args.dataset}, {args.epochs} epochs, {args.image_size} px, batch {args.batch_size}, "
          f"{len(val_images)} val images, load {load[0]:.2f}")
    print(f"  mAP@0.5      ours {ours[0]:.4f}  ultralytics {peer[0]:.4f}  ratio {report['ratio_map50']:.2f}")
    print(f"  mAP@0.5:0.95 ours {ours[1]:.4f}  ultralytics {peer[1]:.4f}  ratio {report['ratio_map']:.2f}")
    print(f"  wall time    ours {our_seconds:.0f} s  ultralytics {peer_seconds:.0f} s  "
          f"ratio {report['ratio_seconds']:.2f}")


if __name__ == "__main__":
    main()
