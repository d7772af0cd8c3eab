"""Dataset readers: every format of the shipped datasets gives the same boxes,
and every kind of bad data gets an error naming the file, the line or
annotation id, the field and the value (or a counted skip)."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from keras_yolo import data
from keras_yolo.data import DataError, sources

DATASETS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                        "datasets")
COCO128 = os.path.join(DATASETS, "coco128")
RACCOON = os.path.join(DATASETS, "raccoon")


def _need(path):
    if not os.path.exists(path):
        pytest.skip(f"shipped dataset {path} missing")
    return path


def _by_name(records):
    return {os.path.basename(p): (b, l, ig) for p, b, l, ig in zip(
        records.image_paths, records.boxes, records.labels, records.ignored)}


def _yolo_reference(label_file, width, height):
    """Independent numpy reading of one YOLO label file -> xyxy pixels."""
    if not os.path.exists(label_file):
        return np.zeros((0, 4)), np.zeros((0,), int)
    rows = np.loadtxt(label_file, ndmin=2)
    cx, cy, w, h = rows[:, 1:].T
    boxes = np.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                      (cx + w / 2) * width, (cy + h / 2) * height], -1)
    return np.clip(boxes, 0, [width, height, width, height]), rows[:, 0]


def _assert_same(a, b, atol):
    """Same images, and per image the same boxes and labels in any order."""
    assert sorted(a) == sorted(b)
    for name in a:
        boxes_a, labels_a, _ = a[name]
        boxes_b, labels_b, _ = b[name]
        assert len(boxes_a) == len(boxes_b), name
        if not len(boxes_a):
            continue
        distance = np.abs(boxes_a[:, None] - boxes_b[None]).max(-1)
        distance[labels_a[:, None] != labels_b[None]] = np.inf
        match = distance.argmin(1)
        assert len(set(match.tolist())) == len(match), name
        np.testing.assert_array_equal(labels_a, labels_b[match], err_msg=name)
        np.testing.assert_allclose(boxes_a, boxes_b[match], atol=atol,
                                   err_msg=name)


def test_coco128_yaml_and_both_coco_jsons_give_the_same_boxes():
    _need(COCO128)
    images = os.path.join(COCO128, "images", "train2017")
    from_yaml = data.read(os.path.join(COCO128, "coco128.yaml"), "val")
    converted = data.read(os.path.join(COCO128, "annotations",
                                       "instances_coco128.json"),
                          images_dir=images)
    original = data.read(os.path.join(COCO128, "annotations",
                                      "instances_coco128_original.json"),
                         images_dir=images)
    assert len(from_yaml) == len(converted) == len(original) == 128
    assert from_yaml.class_names == converted.class_names
    assert from_yaml.class_names == original.class_names
    assert from_yaml.class_names[:3] == ["person", "bicycle", "car"]
    assert sum(len(b) for b in from_yaml.boxes) == 929
    # The README's counts: 10 crowd regions kept out of the targets.
    assert sum(len(b) for b in original.boxes) == 929
    assert sum(len(r) for r in original.ignored) == 10
    yolo = _by_name(from_yaml)
    # Six-digit fractions of up to 640 px: within 0.01 px of COCO's boxes.
    _assert_same(yolo, _by_name(converted), atol=0.01)
    _assert_same(yolo, _by_name(original), atol=0.01)
    # And the YAML reader against a direct numpy reading of the label files.
    for path, boxes, labels, (height, width) in list(zip(
            from_yaml.image_paths, from_yaml.boxes, from_yaml.labels,
            from_yaml.image_sizes))[:16]:
        with Image.open(path) as image:
            assert image.size == (width, height)
        want, want_labels = _yolo_reference(sources.label_path(path), width,
                                            height)
        np.testing.assert_allclose(boxes, want, atol=1e-3)
        np.testing.assert_array_equal(labels, want_labels)


def test_raccoon_voc_yolo_and_coco_give_the_same_boxes_per_split():
    _need(RACCOON)
    for split, count, boxes in (("train", 160, 173), ("test", 40, 44)):
        voc = data.read(RACCOON, split)
        yolo = data.read(RACCOON, split, format="yolo",
                         class_names=["raccoon"])
        assert voc.format == "voc" and voc.class_names == ["raccoon"]
        assert len(voc) == len(yolo) == count
        assert sum(len(b) for b in voc.boxes) == boxes
        _assert_same(_by_name(voc), _by_name(yolo), atol=0.01)
    coco = data.read(os.path.join(RACCOON, "instances_raccoon.json"),
                     images_dir=os.path.join(RACCOON, "images"))
    everything = data.read(RACCOON, "test")
    assert len(coco) == 200
    _assert_same({k: v for k, v in _by_name(coco).items()
                  if k in _by_name(everything)}, _by_name(everything),
                 atol=1e-6)
    # The XML as written: raccoon-1 is <81, 88, 522, 408>.
    train = _by_name(data.read(RACCOON, "train"))
    np.testing.assert_array_equal(train["raccoon-1.jpg"][0],
                                  [[81, 88, 522, 408]])


def test_describe_names_classes_and_splits():
    _need(RACCOON)
    assert data.describe(RACCOON) == {
        "format": "voc", "class_names": ["raccoon"], "num_classes": 1,
        "splits": ["test", "train"]}
    described = data.describe(os.path.join(COCO128, "coco128.yaml"))
    assert described["num_classes"] == 80
    assert described["splits"] == ["train", "val"]
    assert data.describe("shapes")["class_names"][:3] == [
        "circle", "rectangle", "triangle"]


# ----------------------------------------------------------- bad data


@pytest.fixture
def yolo_dir(tmp_path):
    """Three 64x48 images (JPEG, PNG, BMP) with one box each."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i, suffix in enumerate(("jpg", "png", "bmp")):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"im{i}.{suffix}")
        (root / "labels" / f"im{i}.txt").write_text(
            f"{i} 0.5 0.5 0.25 0.5\n")
    (root / "classes.txt").write_text("a\nb\nc\n")
    return root


def test_yolo_folder_reads_pixels_of_each_image_format(yolo_dir):
    records = data.read(str(yolo_dir))
    assert records.format == "yolo" and records.class_names == ["a", "b", "c"]
    assert [os.path.basename(p) for p in records.image_paths] == [
        "im0.jpg", "im1.png", "im2.bmp"]
    for i, boxes in enumerate(records.boxes):
        np.testing.assert_allclose(boxes, [[24, 12, 40, 36]])
        assert records.labels[i].tolist() == [i]


@pytest.mark.parametrize("row, message", [
    ("0 0.5 0.5 0.2", r"im1.txt:2: expected 5 fields 'class cx cy w h', "
     r"got 4: '0 0.5 0.5 0.2'"),
    ("0 0.5 abc 0.2 0.2", r"im1.txt:2: field 'cy' = 'abc' is not a number"),
    ("1.5 0.5 0.5 0.2 0.2", r"im1.txt:2: field 'class' = '1.5' is not an "
     "integer"),
    ("3 0.5 0.5 0.2 0.2", r"im1.txt:2: field 'class' = 3 is outside "
     r"\[0, 3\)"),
    ("0 0.5 0.5 0 0.2", r"im1.txt:2: field 'w' = 0: zero-size box"),
    ("0 0.95 0.5 0.3 0.2", r"im1.txt:2: box xyxy \[51.2, 19.2, 70.4, 28.8\] "
     r"lies outside the 64x48 image"),
    ("0 0.5 nan 0.2 0.2", r"im1.txt:2: field 'cy' = 'nan' is not finite"),
])
def test_bad_yolo_rows_name_file_line_field_and_value(yolo_dir, row,
                                                      message):
    with open(yolo_dir / "labels" / "im1.txt", "a") as f:
        f.write(row + "\n")
    with pytest.raises(DataError, match=message):
        data.read(str(yolo_dir))


def test_skip_leaves_bad_images_out_with_a_counted_summary(yolo_dir,
                                                           caplog):
    with open(yolo_dir / "labels" / "im1.txt", "a") as f:
        f.write("7 0.5 0.5 0.2 0.2\n")
    jpeg = yolo_dir / "images" / "im0.jpg"
    with open(jpeg, "r+b") as f:
        f.truncate(os.path.getsize(jpeg) // 2)  # header intact, data cut
    with caplog.at_level(logging.WARNING, logger="keras_yolo"):
        records = data.read(str(yolo_dir), on_error="skip")
    assert [os.path.basename(p) for p in records.image_paths] == ["im2.bmp"]
    summary = caplog.text
    assert "skipped 2 of 3 images" in summary
    assert "1 x unreadable image" in summary and "im0.jpg" in summary
    assert "1 x class id outside the class list" in summary
    with pytest.raises(DataError, match=r"im0.jpg: truncated JPEG"):
        data.read(str(yolo_dir))


def test_unreadable_image_is_named(yolo_dir):
    (yolo_dir / "images" / "im1.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"im1.png: unreadable image"):
        data.read(str(yolo_dir))


def test_images_tf_cannot_decode_are_named_never_dropped_silently(
        yolo_dir, caplog):
    Image.open(yolo_dir / "images" / "im1.png").convert("1").save(
        yolo_dir / "images" / "im1.png", format="BMP")  # 1-bit, misnamed
    with pytest.raises(DataError, match=r"im1.png: 1-bit BMP"):
        data.read(str(yolo_dir))
    os.remove(yolo_dir / "images" / "im1.png")
    Image.new("RGB", (8, 8)).save(yolo_dir / "images" / "scan.tif")
    with caplog.at_level(logging.WARNING, logger="keras_yolo"):
        records = data.read(str(yolo_dir))
    assert len(records) == 2
    assert "left out 1 image files tf.io cannot decode" in caplog.text
    assert "scan.tif" in caplog.text


def test_a_misnamed_labels_folder_is_an_error_not_background(yolo_dir,
                                                              caplog):
    os.remove(yolo_dir / "labels" / "im2.txt")
    with caplog.at_level(logging.WARNING, logger="keras_yolo"):
        records = data.read(str(yolo_dir))
    assert records.labels[2].size == 0
    assert "1 of 3 images have no label file" in caplog.text
    shutil.move(yolo_dir / "labels", yolo_dir / "label")
    with pytest.raises(DataError, match=r"none of the 3 images has a label "
                       r"file \(looked for e.g. .*labels/im0.txt"):
        data.read(str(yolo_dir))


def test_ultralytics_yaml_with_list_file_glob_and_names_dict(yolo_dir):
    (yolo_dir / "val.txt").write_text("./images/im2.bmp\n")
    (yolo_dir / "data.yaml").write_text(
        "path: .\ntrain: images/*.png\nval: val.txt\n"
        "names:\n  0: a\n  1: b\n  2: c\n")
    yaml = str(yolo_dir / "data.yaml")
    train, val = data.read(yaml, "train"), data.read(yaml, "val")
    assert [os.path.basename(p) for p in train.image_paths] == ["im1.png"]
    assert [os.path.basename(p) for p in val.image_paths] == ["im2.bmp"]
    assert val.labels[0].tolist() == [2] and val.class_names == ["a", "b",
                                                                 "c"]
    with pytest.raises(DataError, match=r"data.yaml: no split 'test'"):
        data.read(yaml, "test")
    (yolo_dir / "bad.yaml").write_text("train: images\nnames: [a, b]\n"
                                       "nc: 3\n")
    with pytest.raises(DataError, match=r"bad.yaml: field 'nc' = 3 but "
                       "'names' lists 2"):
        data.read(str(yolo_dir / "bad.yaml"))


# ----------------------------------------------------------- COCO JSON


@pytest.fixture
def coco(yolo_dir):
    """COCO JSON of the same three images; returns (path, the dict)."""
    content = {
        "images": [{"id": 10 + i, "file_name": f"im{i}.{s}", "width": 64,
                    "height": 48} for i, s in enumerate(("jpg", "png",
                                                         "bmp"))],
        "categories": [{"id": 7, "name": "a"}, {"id": 3, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7,
             "bbox": [24, 12, 16, 24], "iscrowd": 0},
            {"id": 2, "image_id": 11, "category_id": 3,
             "bbox": [0, 0, 10, 10]},
            {"id": 3, "image_id": 11, "category_id": 7,
             "bbox": [5, 5, 20, 20], "iscrowd": 1},
        ]}
    return yolo_dir / "coco.json", content


def _write(path, content):
    path.write_text(json.dumps(content))
    return str(path)


def test_coco_maps_category_ids_in_order_and_keeps_crowd_out(coco,
                                                             yolo_dir):
    path, content = coco
    records = data.read(_write(path, content),
                        images_dir=str(yolo_dir / "images"))
    assert records.class_names == ["b", "a"]   # ids 3, 7
    assert records.labels[0].tolist() == [1]
    np.testing.assert_allclose(records.boxes[0], [[24, 12, 40, 36]])
    assert records.labels[1].tolist() == [0]
    np.testing.assert_allclose(records.ignored[1], [[5, 5, 25, 25]])
    assert records.ignored_labels[1].tolist() == [1]
    assert records.labels[2].size == 0


def test_coco_crowd_regions_reach_load_letterboxed_with_their_class(
        coco, yolo_dir):
    path, content = coco
    ds = data.load(_write(path, content), images_dir=str(yolo_dir / "images"),
                   image_size=32, bounding_box_format="xyxy",
                   return_ignored=True)
    items = list(ds.as_numpy_iterator())
    assert [y["ignored_labels"].tolist() for _, y in items] == [[-1], [1],
                                                                [-1]]
    # im1 is 64x48: scale 1/2 to 32x24, 4 px of padding on top.
    np.testing.assert_allclose(items[1][1]["ignored_boxes"],
                               [[2.5, 6.5, 12.5, 16.5]])
    assert "ignored_boxes" not in next(iter(data.load(
        str(path), images_dir=str(yolo_dir / "images"), image_size=32)))[1]
    with pytest.raises(ValueError, match="return_ignored"):
        data.load(str(path), images_dir=str(yolo_dir / "images"),
                  augment=True, return_ignored=True)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["annotations"][1].pop("bbox"),
     r"coco.json: annotation id 2: missing field 'bbox'"),
    (lambda c: c["annotations"][1].update(bbox=[0, 0, 10]),
     r"coco.json: annotation id 2: field 'bbox' = \[0, 0, 10\] is not "
     r"\[x, y, w, h\]"),
    (lambda c: c["annotations"][1].update(category_id=99),
     r"annotation id 2: field 'category_id' = 99 names no category"),
    (lambda c: c["annotations"][2].update(category_id=99),
     r"annotation id 3: field 'category_id' = 99 names no category"),
    (lambda c: c["annotations"][1].update(image_id=99),
     r"annotation id 2: field 'image_id' = 99 names no image"),
    (lambda c: c["annotations"][1].update(bbox=[60, 0, 10, 10]),
     r"annotation id 2: box xyxy \[60.0, 0.0, 70.0, 10.0\] lies outside "
     "the 64x48 image"),
    (lambda c: c["annotations"][1].update(bbox=[6, 0, 0, 10]),
     r"annotation id 2: box xyxy .* has zero or negative width"),
    (lambda c: c["images"][1].update(width=640),
     r"image id 11: fields 'height', 'width' = 48, 640 but the image "
     r".*im1.png is 48x64"),
])
def test_bad_coco_annotations_name_the_annotation_field_and_value(
        coco, yolo_dir, change, message):
    path, content = coco
    change(content)
    with pytest.raises(DataError, match=message):
        data.read(_write(path, content), images_dir=str(yolo_dir / "images"))
    records = data.read(str(path), images_dir=str(yolo_dir / "images"),
                        on_error="skip")
    assert 2 <= len(records) <= 3


@pytest.mark.parametrize("change, message", [
    (lambda c: c["images"][1].update(id=10),
     r"coco.json: images\[1\]: field 'id' = 10 repeats images\[0\]"),
    (lambda c: c["categories"][1].update(id=7),
     r"coco.json: categories\[1\]: field 'id' = 7 repeats categories\[0\]"),
    (lambda c: c["images"][0].pop("file_name"),
     r"coco.json: images\[0\]: missing field 'file_name'"),
    (lambda c: c.pop("annotations"),
     r"coco.json: missing or malformed field 'annotations'"),
])
def test_coco_dataset_level_faults_always_raise(coco, yolo_dir, change,
                                                 message):
    path, content = coco
    change(content)
    _write(path, content)
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError, match=message):
            data.read(str(path), images_dir=str(yolo_dir / "images"),
                      on_error=on_error)


def test_json_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [],\n "annotations": [\n}')
    with pytest.raises(DataError, match=r"broken.json: line 3 column 1: not "
                       "valid JSON"):
        data.read(str(path))


# ------------------------------------------------------------ Pascal VOC


def _voc_xml(name, objects, size=(64, 48)):
    body = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox>"
        f"<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objects)
    return (f"<annotation><filename>{name}</filename><size><width>{size[0]}"
            f"</width><height>{size[1]}</height><depth>3</depth></size>"
            f"{body}</annotation>")


def test_voc_difficult_is_flagged_out_of_targets_and_bad_xml_named(
        yolo_dir):
    (yolo_dir / "annotations").mkdir()
    (yolo_dir / "annotations" / "im0.xml").write_text(_voc_xml(
        "im0.jpg", [("dog", (1, 2, 30, 40), 0), ("cat", (5, 5, 9, 9), 1)]))
    (yolo_dir / "annotations" / "im1.xml").write_text(_voc_xml(
        "im1.png", [("cat", (10, 10, 20, 20), 0)]))
    os.remove(yolo_dir / "classes.txt")
    records = data.read(str(yolo_dir))
    assert records.format == "voc" and records.class_names == ["cat", "dog"]
    assert len(records) == 2
    np.testing.assert_array_equal(records.boxes[0], [[1, 2, 30, 40]])
    np.testing.assert_array_equal(records.ignored[0], [[5, 5, 9, 9]])
    assert records.ignored_labels[0].tolist() == [0]
    assert records.ignored_labels[1].size == 0
    kept = data.read(str(yolo_dir), include_difficult=True)
    assert kept.labels[0].tolist() == [1, 0]
    (yolo_dir / "annotations" / "im1.xml").write_text("<annotation><size>")
    with pytest.raises(DataError, match=r"im1.xml: line 1 column \d+: not "
                       "valid XML"):
        data.read(str(yolo_dir))
    (yolo_dir / "annotations" / "im1.xml").write_text(_voc_xml(
        "im1.png", [("cat", ("ten", 10, 20, 20), 0)]))
    with pytest.raises(DataError, match=r"im1.xml: object 0: field 'xmin' = "
                       "'ten' is not a number"):
        data.read(str(yolo_dir))


# ------------------------------------------------ yolov5 npz state dicts


@pytest.mark.parity
def test_npz_state_dict_with_num_batches_tracked_loads(tmp_path):
    """A torch state dict saved straight to .npz keeps BatchNorm's
    `num_batches_tracked` counters; `load_yolov5` ignores them."""
    from conftest import require_peer

    reference = require_peer("yolov5_reference", "(torch + yolov5)").load()
    torch, yolov5_yolo = reference.torch, reference.yolo
    import yolov5

    from keras_yolo.weights import load_yolov5

    torch.manual_seed(0)
    yaml = os.path.join(os.path.dirname(yolov5.__file__), "models",
                        "yolov5n.yaml")
    model = yolov5_yolo.Model(yaml, ch=3, nc=2).eval()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert any(k.endswith("num_batches_tracked") for k in state)
    np.savez(tmp_path / "raw.npz", **state)
    keras_model = load_yolov5(str(tmp_path / "raw.npz"),
                              input_shape=(64, 64, 3))
    image = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 3))
    with torch.no_grad():
        _, raw = model(torch.from_numpy(image.transpose(0, 3, 1, 2)).float())
    ours = keras_model(image.astype("float32"))
    np.testing.assert_allclose(np.asarray(ours[0]),
                               raw[0].permute(0, 2, 3, 1, 4).numpy(),
                               atol=1e-3)
