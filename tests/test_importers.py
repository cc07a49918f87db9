"""Review sets from the annotations people have: COCO JSON, VOC palette masks, box CSVs, no masks at all.

Expected masks come from pycocotools' own COCO.annToMask (the reference reader of COCO files) or are
drawn by hand with numpy slices; images must arrive in the pinned set byte for byte.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from gate.cli import _run
from gate.errors import ReviewSetError
from gate.inputs import coco as coco_import
from gate.inputs import importers, review_set
from gate.inputs.review_set import ReviewSet


def photo(path: Path, width: int, height: int, seed: int) -> Path:
    """A JPEG 'photo' of the given size with smooth random content."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The hand-made RLE of mask[5:15, 10:12] in a 32x32 image: COCO counts run down the columns,
# starting with zeros: 10 empty columns + 5 rows = 325 zeros, 10 ones (rows 5-14 of column 10), then
# 17 zeros (rows 15-31) + 5 zeros (rows 0-4 of column 11), 10 ones, and zeros to the end.
UNCOMPRESSED_COUNTS = [325, 10, 17 + 5, 10, 32 * 32 - 325 - 10 - 22 - 10]


def hand_rle_mask() -> np.ndarray:
    mask = np.zeros((32, 32), dtype=bool)
    mask[5:15, 10:12] = True
    return mask


def compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


BLOB = np.zeros((36, 24), dtype=bool)
BLOB[4:20, 3:9] = True
BLOB[25:30, 10:22] = True


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, Path]:
    """A COCO export: five JPEGs of mixed sizes, polygons, RLE (both kinds), a box, no-annotation and mixed images."""
    photos = tmp_path / "photos"
    files = {1: ("a.jpg", 40, 30), 2: ("sub/b.jpg", 24, 36), 3: ("c.jpg", 32, 32), 4: ("d.jpg", 20, 16),
             5: ("cat/e.jpg", 16, 16), 6: ("f.jpg", 16, 16)}
    for image_id, (name, width, height) in files.items():
        photo(photos / name, width, height, seed=image_id)
    anns = [
        # two cat instances in a.jpg: a triangle and a square, united
        {"image_id": 1, "category_id": 7, "segmentation": [[2, 2, 18, 2, 2, 20]], "bbox": [2, 2, 16, 18]},
        {"image_id": 1, "category_id": 7, "segmentation": [[25.5, 10, 35, 10, 35, 25, 25.5, 25]],
         "bbox": [25.5, 10, 9.5, 15]},
        {"image_id": 2, "category_id": 9, "segmentation": compressed_rle(BLOB), "iscrowd": 1},
        {"image_id": 3, "category_id": 9, "segmentation": {"size": [32, 32], "counts": UNCOMPRESSED_COUNTS},
         "iscrowd": 1},
        {"image_id": 4, "category_id": 7, "bbox": [2, 3, 4, 5]},  # a box only
        {"image_id": 6, "category_id": 7, "bbox": [0, 0, 4, 4]},
        {"image_id": 6, "category_id": 9, "bbox": [8, 8, 4, 4]},
    ]
    doc = {
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, (n, w, h) in files.items()],
        "annotations": [{"id": k + 1, "area": 1, "iscrowd": 0, **ann} for k, ann in enumerate(anns)],
        "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 11, "name": "bird"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return path, photos


def reference_masks(json_path: Path) -> dict[str, np.ndarray]:
    """file_name -> union of its annotations' masks, by pycocotools' COCO.annToMask."""
    coco = COCO(str(json_path))
    out = {}
    for image_id, info in coco.imgs.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        if anns and all(a.get("segmentation") for a in anns):  # annToMask reads no box-only annotation
            out[info["file_name"]] = np.any([coco.annToMask(a) > 0 for a in anns], axis=0)
    return out


def by_id(pinned: ReviewSet) -> dict[str, int]:
    return {s.sample_id: i for i, s in enumerate(pinned.samples)}


def test_coco_export_to_a_pinned_set(tmp_path: Path, export: tuple[Path, Path]) -> None:
    json_path, photos = export
    found = coco_import.coco(json_path, photos)
    pinned = review_set.build_from(found.entries, tmp_path / "set", source=json_path)
    index = by_id(pinned)
    assert pinned.classes == ("cat", "dog")
    assert sorted(index) == ["cat/a", "cat/d", "dog/c", "dog/sub/b"]  # e.jpg (no annotation) and f.jpg (two) skipped
    assert any("1 images with objects of several categories skipped" in note for note in found.notes)
    assert any("1 images without annotations skipped" in note for note in found.notes)
    assert pinned.has_mask.all()
    reference = reference_masks(json_path)
    assert set(reference) == {"a.jpg", "sub/b.jpg", "c.jpg"}
    for sample_id, file_name in (("cat/a", "a.jpg"), ("dog/sub/b", "sub/b.jpg"), ("dog/c", "c.jpg")):
        i = index[sample_id]
        assert pinned.load_image(i).shape[:2] == reference[file_name].shape
        mask = pinned.load_mask(i)
        assert mask is not None and np.array_equal(mask, reference[file_name]), sample_id
    for sample_id, file_name in (("cat/a", "a.jpg"), ("dog/sub/b", "sub/b.jpg"), ("cat/d", "d.jpg")):
        sample = pinned.samples[index[sample_id]]
        assert sha(pinned.root / sample.image) == sha(photos / file_name)  # byte for byte
        assert pinned.load_void(index[sample_id]) is None
    # independent of pycocotools: the hand-written RLE, the compressed blob and the box
    assert np.array_equal(pinned.load_mask(index["dog/c"]), hand_rle_mask())
    assert np.array_equal(pinned.load_mask(index["dog/sub/b"]), BLOB)
    box = np.zeros((16, 20), dtype=bool)
    box[3:8, 2:6] = True  # [x=2, y=3, w=4, h=5]: rows 3..7, columns 2..5
    assert np.array_equal(pinned.load_mask(index["cat/d"]), box)
    # both instances of a.jpg are in its mask: a pixel inside the triangle and one inside the square
    mask_a = pinned.load_mask(index["cat/a"])
    assert mask_a is not None and mask_a[4, 4] and mask_a[15, 30] and not mask_a[28, 10]


def test_split_and_folder_labels(tmp_path: Path, export: tuple[Path, Path]) -> None:
    json_path, photos = export
    found = coco_import.coco(json_path, photos, multi_class="split", unlabelled="folder")
    pinned = review_set.build_from(found.entries, tmp_path / "set", source=json_path)
    index = by_id(pinned)
    assert {"cat/f", "dog/f", "cat/cat/e"} <= set(index)
    cat_f, dog_f = pinned.load_mask(index["cat/f"]), pinned.load_mask(index["dog/f"])
    assert cat_f is not None and dog_f is not None
    assert np.argwhere(cat_f).min(0).tolist() == [0, 0] and np.argwhere(cat_f).max(0).tolist() == [3, 3]
    assert np.argwhere(dog_f).min(0).tolist() == [8, 8] and np.argwhere(dog_f).max(0).tolist() == [11, 11]
    unlabelled = index["cat/cat/e"]
    assert pinned.load_mask(unlabelled) is None and not pinned.has_mask[unlabelled]
    assert pinned.samples[unlabelled].mask == ""
    assert int(pinned.has_mask.sum()) == pinned.size - 1


def edit(json_path: Path, change: Any) -> None:
    doc = json.loads(json_path.read_text())
    change(doc)
    json_path.write_text(json.dumps(doc))


def set_key(section: str, index: int, key: str, value: Any) -> Any:
    return lambda doc: doc[section][index].__setitem__(key, value)


@pytest.mark.parametrize(("change", "field", "needle"), [
    (set_key("images", 2, "file_name", "gone.jpg"), "images[2].file_name", "not found"),
    (set_key("images", 2, "file_name", "../outside.jpg"), "images[2].file_name", "inside"),
    (set_key("images", 0, "width", 41), "images[0].width", "41x30"),
    (set_key("annotations", 0, "category_id", 99), "annotations[0].category_id", "99"),
    (set_key("annotations", 0, "image_id", 99), "annotations[0].image_id", "99"),
    (set_key("annotations", 0, "image_id", []), "annotations[0].image_id", "[]"),
    (set_key("annotations", 3, "segmentation", {"size": [32, 32], "counts": [-1, 1025]}),
     "annotations[3].segmentation.counts", ">= 0"),
    (set_key("annotations", 0, "segmentation", [[1, 2, 3]]), "annotations[0].segmentation[0]", "3 x,y"),
    (set_key("annotations", 2, "segmentation", {"size": [10, 10], "counts": "abc"}),
     "annotations[2].segmentation.size", "RLE size"),
    (set_key("annotations", 3, "segmentation", {"size": [32, 32], "counts": [1, 2]}),
     "annotations[3].segmentation.counts", "sum to 3"),
    (set_key("annotations", 4, "bbox", [1, 1, 0, 3]), "annotations[4].bbox", "bbox"),
    (lambda doc: doc.pop("categories"), "categories", "list"),
], ids=["missing-image", "escape", "size", "category", "image-id", "image-id-list", "negative-counts",
        "short-polygon", "rle-size", "rle-sum",
        "empty-box", "no-categories"])
def test_bad_coco_names_the_json_and_field(
    tmp_path: Path, export: tuple[Path, Path], change: Any, field: str, needle: str
) -> None:
    json_path, photos = export
    edit(json_path, change)
    with pytest.raises(ReviewSetError) as info:
        coco_import.coco(json_path, photos)
    assert info.value.path == str(json_path)
    assert info.value.field == field
    assert needle in info.value.message


def test_missing_image_through_the_cli_exits_2_with_one_line(
    tmp_path: Path, export: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    json_path, photos = export
    (photos / "c.jpg").unlink()
    code = _run(["review-set", "build", "--coco", str(json_path), "--images", str(photos), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(json_path) in err[0] and "images[2].file_name" in err[0] and "c.jpg" in err[0]
    assert not (tmp_path / "o").exists()


def test_cli_builds_from_coco(tmp_path: Path, export: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    json_path, photos = export
    out = tmp_path / "o"
    code = _run(["review-set", "build", "--coco", str(json_path), "--images", str(photos), "-o", str(out),
                 "--unlabelled", "folder"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "5 samples (4 with a mask), 2 classes" in captured.out
    assert "note:" in captured.err and "several categories" in captured.err
    assert review_set.verify(out) == review_set.open_review_set(out).digest


@pytest.mark.parametrize("args", [
    ["--coco", "x.json"],  # no --images
    ["src", "--coco", "x.json", "--images", "p"],  # two sources
    ["--boxes", "b.csv", "--images", "p", "--voc"],
], ids=["no-images", "two-sources", "voc-without-folder"])
def test_cli_usage_errors(tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["review-set", "build", *args, "-o", str(tmp_path / "o")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- VOC palette masks

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [64, 64, 64] * 253  # index 255 = the boundary colour
VOC_PALETTE[255 * 3: 256 * 3] = [224, 224, 192]


def voc_mask(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values.astype(np.uint8), mode="P")
    image.putpalette(VOC_PALETTE)
    image.save(path)


def test_voc_palette_with_void(tmp_path: Path) -> None:
    source = tmp_path / "voc"
    cat = np.zeros((12, 16), dtype=np.uint8)
    cat[2:8, 3:9] = 8  # the cat (VOC index 8)
    cat[1, 2:10] = 255  # its boundary: void
    cat[10, 0] = 15  # a person in the corner: also object (any nonzero, non-255 index)
    dog = np.zeros((10, 10), dtype=np.uint8)
    dog[4:6, 4:6] = 12  # no void pixel at all
    for name, values in (("cat", cat), ("dog", dog)):
        photo(source / "images" / name / "x.jpg", values.shape[1], values.shape[0], seed=len(name))
        voc_mask(source / "masks" / name / "x.png", values)
    pinned = review_set.build(source, tmp_path / "set", voc=True)
    index = by_id(pinned)
    i_cat, i_dog = index["cat/x"], index["dog/x"]
    assert np.array_equal(pinned.load_mask(i_cat), (cat == 8) | (cat == 15))
    assert np.array_equal(pinned.load_void(i_cat), cat == 255)
    assert np.array_equal(pinned.load_mask(i_dog), dog == 12)
    assert pinned.load_void(i_dog) is None and pinned.samples[i_dog].void == ""
    header = (pinned.root / "samples.csv").read_text().splitlines()[0]
    assert header == "id,image,mask,label,void"
    with Image.open(pinned.root / pinned.samples[i_cat].mask) as written:
        assert written.mode == "L" and written.format == "PNG"  # 8-bit PNG, 0/255


def test_plain_reading_of_a_palette_mask_is_nonzero_index(tmp_path: Path) -> None:
    """Without --voc a palette mask is read by index, so 255 (void) counts as object: --voc exists for that."""
    source = tmp_path / "voc"
    values = np.zeros((6, 6), dtype=np.uint8)
    values[1:3, 1:3] = 8
    values[0, :] = 255
    for name in ("cat", "dog"):
        photo(source / "images" / name / "x.jpg", 6, 6, seed=1)
        voc_mask(source / "masks" / name / "x.png", values)
    pinned = review_set.build(source, tmp_path / "set")
    assert np.array_equal(pinned.load_mask(0), values != 0)
    assert pinned.load_void(0) is None


# ----------------------------------------------------------------------------- boxes CSV


def test_boxes_csv(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photo(photos / "one.jpg", 20, 10, seed=1)
    photo(photos / "two.png", 8, 8, seed=2)
    photo(photos / "three.jpg", 9, 7, seed=3)
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("image,label,x0,y0,x1,y1\n"
                        "one.jpg,car,1,2,5,6\n"
                        "one.jpg,car,10,0,20,3\n"
                        "two.png,truck,0,0,8,8\n"
                        "three.jpg,truck,,,,\n")
    pinned = review_set.build_from(importers.boxes(csv_path, photos).entries, tmp_path / "set", source=csv_path)
    index = by_id(pinned)
    one = np.zeros((10, 20), dtype=bool)
    one[2:6, 1:5] = True  # x0 <= x < x1, y0 <= y < y1
    one[0:3, 10:20] = True
    assert np.array_equal(pinned.load_mask(index["car/one"]), one)
    assert pinned.load_mask(index["truck/two"]).all()  # type: ignore[union-attr]
    assert pinned.load_mask(index["truck/three"]) is None
    assert pinned.has_mask.tolist() == [pinned.samples[i].sample_id != "truck/three" for i in range(3)]
    assert sha(pinned.root / pinned.samples[index["truck/two"]].image) == sha(photos / "two.png")


@pytest.mark.parametrize(("row", "field", "needle"), [
    ("one.jpg,car,1,2,x,6", "x1", "not a number"),
    ("one.jpg,car,5,2,5,6", "x1", "empty box"),
    ("one.jpg,car,1,2,5,nan", "y1", "finite"),
    ("one.jpg,,1,2,5,6", "label", "empty label"),
    ("gone.jpg,car,1,2,5,6", "image", "not found"),
    ("one.jpg,car,1,2,21,6", "x1", "leaves the 20x10 image"),
], ids=["text", "empty", "nan", "no-label", "missing-image", "outside"])
def test_bad_box_rows_name_line_and_field(tmp_path: Path, row: str, field: str, needle: str) -> None:
    photos = tmp_path / "photos"
    photo(photos / "one.jpg", 20, 10, seed=1)
    photo(photos / "two.jpg", 8, 8, seed=2)
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text(f"image,label,x0,y0,x1,y1\ntwo.jpg,dog,0,0,2,2\n{row}\n")
    with pytest.raises(ReviewSetError) as info:
        found = importers.boxes(csv_path, photos)
        review_set.build_from(found.entries, tmp_path / "set", source=csv_path)
    assert info.value.path == f"{csv_path}:3"
    assert info.value.field == field
    assert needle in info.value.message
    assert not (tmp_path / "set").exists()


# ----------------------------------------------------------------------------- plain layout extras


def test_plain_with_missing_masks_and_other_formats(tmp_path: Path) -> None:
    source = tmp_path / "src"
    rgb = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    for name in ("cat", "dog"):
        (source / "images" / name).mkdir(parents=True)
    Image.fromarray(rgb).save(source / "images" / "cat" / "a.bmp")  # re-encoded as PNG, same pixels
    photo(source / "images" / "dog" / "b.jpg", 5, 6, seed=3)
    (source / "masks" / "cat").mkdir(parents=True)
    colour_mask = np.zeros((6, 5, 3), dtype=np.uint8)
    colour_mask[1:3, 2:4] = (255, 0, 0)  # a red object on black: written as an 8-bit 0/255 mask
    Image.fromarray(colour_mask).save(source / "masks" / "cat" / "a.png")
    with pytest.raises(ReviewSetError, match="--allow-missing-masks"):
        review_set.build(source, tmp_path / "refused")
    pinned = review_set.build(source, tmp_path / "set", allow_missing_masks=True)
    index = by_id(pinned)
    a, b = index["cat/a"], index["dog/b"]
    assert pinned.samples[a].image == "images/cat/a.png"
    assert np.array_equal(pinned.load_image(a), rgb)
    want = np.zeros((6, 5), dtype=bool)
    want[1:3, 2:4] = True
    assert np.array_equal(pinned.load_mask(a), want)
    with Image.open(pinned.root / pinned.samples[a].mask) as written:
        assert written.mode == "L" and sorted(np.unique(np.asarray(written)).tolist()) == [0, 255]
    assert pinned.load_mask(b) is None and pinned.has_mask.tolist() == [True, False]
    assert (pinned.root / "samples.csv").read_text().splitlines()[2] == "dog/b,images/dog/b.jpg,,dog"


def test_plain_mask_of_another_size_is_refused_naming_it(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for name, mask_size in (("cat", (8, 6)), ("dog", (8, 7))):
        photo(source / "images" / name / "x.jpg", 8, 6, seed=1)
        (source / "masks" / name).mkdir(parents=True)
        Image.new("L", mask_size).save(source / "masks" / name / "x.png")
    with pytest.raises(ReviewSetError) as info:
        review_set.build(source, tmp_path / "set")
    assert info.value.path == str(source / "masks" / "dog" / "x.png") and info.value.field == "mask"
    assert "(8, 7)" in info.value.message and "(8, 6)" in info.value.message


def test_exif_rotated_photo_takes_masks_in_its_display_frame(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for name in ("cat", "dog"):
        image = Image.new("RGB", (12, 8), (200, 10, 10))
        exif = Image.Exif()
        exif[0x0112] = 6  # shown turned a quarter: 8 wide, 12 high
        (source / "images" / name).mkdir(parents=True)
        image.save(source / "images" / name / "x.jpg", exif=exif)
        (source / "masks" / name).mkdir(parents=True)
        Image.new("L", (8, 12), 255).save(source / "masks" / name / "x.png")
    pinned = review_set.build(source, tmp_path / "set")
    assert pinned.load_image(0).shape == (12, 8, 3)
    assert pinned.load_mask(0).shape == (12, 8)  # type: ignore[union-attr]


VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]


def test_voc_class_list_keeps_only_the_class_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "voc"
    cat = np.zeros((12, 16), dtype=np.uint8)
    cat[2:8, 3:9] = 8  # cat is index 8 in the VOC list
    cat[1, 2:10] = 255
    cat[10, 0:4] = 15  # a person: neither the cat nor background -> void
    dog = np.zeros((10, 10), dtype=np.uint8)
    dog[4:6, 4:6] = 12
    for name, values in (("cat", cat), ("dog", dog)):
        photo(source / "images" / name / "x.jpg", values.shape[1], values.shape[0], seed=len(name))
        voc_mask(source / "masks" / name / "x.png", values)
    class_list = tmp_path / "classes.txt"
    class_list.write_text("\n".join(VOC_CLASSES) + "\n")
    out = tmp_path / "set"
    assert _run(["review-set", "build", str(source), "--voc-classes", str(class_list), "-o", str(out)]) == 0
    pinned = review_set.open_review_set(out)
    index = by_id(pinned)
    assert np.array_equal(pinned.load_mask(index["cat/x"]), cat == 8)
    assert np.array_equal(pinned.load_void(index["cat/x"]), (cat == 255) | (cat == 15))
    assert np.array_equal(pinned.load_mask(index["dog/x"]), dog == 12)
    assert pinned.load_void(index["dog/x"]) is None
    class_list.write_text("aeroplane\nbicycle\ncat\n")  # no dog
    capsys.readouterr()
    assert _run(["review-set", "build", str(source), "--voc-classes", str(class_list), "-o", str(tmp_path / "b")]) == 2
    assert "'dog' is not in the VOC class list" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the documented commands

DOCS = Path(__file__).resolve().parents[1] / "docs" / "importing.md"


def documented_commands() -> list[str]:
    return re.findall(r"^\| [^|]+ \| `(xgate review-set build [^`]+)` \|$", DOCS.read_text(), flags=re.MULTILINE)


def test_docs_list_one_command_per_source() -> None:
    commands = documented_commands()
    assert len(commands) == 6
    for flag in ("--allow-missing-masks", "--voc ", "--voc-classes", "--coco", "--boxes"):
        assert any(flag in c for c in commands), flag


def test_every_documented_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    values = np.zeros((8, 10), dtype=np.uint8)
    values[2:5, 3:7] = 8
    rows, images = ["image,label,x0,y0,x1,y1"], []
    for k, name in enumerate(("cat", "dog")):
        for folder in ("photos", "voc"):
            photo(tmp_path / folder / "images" / name / "a.jpg", 10, 8, seed=k)
            voc_mask(tmp_path / folder / "masks" / name / "a.png", np.where(values > 0, 8 + 4 * k, 0))
        rows.append(f"images/{name}/a.jpg,{name},3,2,7,5")
        images.append({"id": k + 1, "file_name": f"images/{name}/a.jpg", "width": 10, "height": 8})
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "voc-classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    annotations = [{"id": k, "image_id": k, "category_id": k, "bbox": [3, 2, 4, 3]} for k in (1, 2)]
    (tmp_path / "instances.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    box = np.zeros((8, 10), dtype=bool)
    box[2:5, 3:7] = True
    for command in documented_commands():
        out = tmp_path / "review_sets" / "my-set"
        shutil.rmtree(out, ignore_errors=True)
        assert _run(shlex.split(command)[1:]) == 0, (command, capsys.readouterr().err)
        pinned = review_set.open_review_set(out)
        assert pinned.classes == ("cat", "dog") and pinned.size == 2, command
        assert all(np.array_equal(pinned.load_mask(i), box) for i in range(2)), command


def test_jpeg_masks_and_bombs_are_refused_at_build(tmp_path: Path) -> None:
    from tests.test_images import png_header_only

    source = tmp_path / "src"
    for name in ("cat", "dog"):
        photo(source / "images" / name / "x.jpg", 8, 6, seed=1)
        (source / "masks" / name).mkdir(parents=True)
        Image.new("L", (8, 6), 255).save(source / "masks" / name / "x.png")
    (source / "masks" / "dog" / "x.png").unlink()
    Image.new("L", (8, 6), 255).save(source / "masks" / "dog" / "x.jpg")
    with pytest.raises(ReviewSetError, match="lossless") as info:
        review_set.build(source, tmp_path / "set")
    assert info.value.path == str(source / "masks" / "dog" / "x.jpg")
    (source / "masks" / "dog" / "x.jpg").unlink()
    bomb = source / "images" / "dog" / "x.png"
    (source / "images" / "dog" / "x.jpg").unlink()
    png_header_only(bomb, 100_000, 100_000)
    with pytest.raises(ReviewSetError) as info:
        review_set.build(source, tmp_path / "set", allow_missing_masks=True)
    assert info.value.path == str(bomb)
    assert not (tmp_path / "set").exists()


def test_a_colour_voc_mask_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "voc"
    for name in ("cat", "dog"):
        photo(source / "images" / name / "x.jpg", 6, 4, seed=1)
        (source / "masks" / name).mkdir(parents=True)
        Image.new("RGB", (6, 4), (128, 0, 0)).save(source / "masks" / name / "x.png")  # VOC colours, not indices
    with pytest.raises(ReviewSetError, match="not mode RGB") as info:
        review_set.build(source, tmp_path / "set", voc=True)
    assert info.value.path == str(source / "masks" / "cat" / "x.png") and info.value.field == "mask"


# ----------------------------------------------------------------------------- bounded fuzzing: input errors only

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10)
coco_fields = st.sampled_from([("images", 0, "id"), ("images", 0, "file_name"), ("images", 0, "width"),
                               ("annotations", 0, "segmentation"), ("annotations", 1, "segmentation"),
                               ("annotations", 0, "bbox"), ("annotations", 0, "category_id"),
                               ("categories", 0, "name"), ("categories", 0, "id"), ("annotations", 1, "image_id")])


@pytest.fixture(scope="module")
def fuzz_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz_photos")
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (8, 6), (9, 9, 9)).save(folder / name)
    return folder


def only_input_errors(call: Any) -> None:
    try:
        call()
    except ReviewSetError as error:
        assert error.exit_code == 2 and "\n" not in str(error)


@FUZZ
@given(changes=st.lists(st.tuples(coco_fields, json_values), min_size=1, max_size=3),
       counts=st.one_of(st.text(max_size=20), st.lists(st.integers(-3, 60), max_size=6)))
def test_fuzzed_coco_gives_masks_or_input_errors(fuzz_photos: Path, changes: list[Any], counts: Any) -> None:
    doc: dict[str, Any] = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6},
                   {"id": 2, "file_name": "b.jpg", "width": 8, "height": 6}],
        "annotations": [{"image_id": 1, "category_id": 1, "segmentation": [[0, 0, 4, 0, 4, 4]]},
                        {"image_id": 2, "category_id": 2, "segmentation": {"size": [6, 8], "counts": counts}}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    for (section, index, key), value in changes:
        doc[section][index][key] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.json"
        path.write_text(json.dumps(doc))
        only_input_errors(lambda: review_set.build_from(
            coco_import.coco(path, fuzz_photos, multi_class="split", unlabelled="folder").entries, Path(tmp) / "out",
            source=path))


cells = st.one_of(st.integers(-3, 12).map(str), st.floats().map(str), st.just(""), st.text(max_size=4))
box_rows = st.tuples(st.sampled_from(["a.jpg", "b.jpg", "c.jpg", "../x", "", "/etc/hosts"]),
                     st.sampled_from(["cat", "dog", "", " "]), cells, cells, cells, cells)


@FUZZ
@given(rows=st.lists(box_rows, max_size=5), header=st.booleans())
def test_fuzzed_boxes_give_masks_or_input_errors(fuzz_photos: Path, rows: list[Any], header: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "boxes.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            if header:
                writer.writerow(importers.BOX_COLUMNS)
            writer.writerows(rows)
        only_input_errors(lambda: review_set.build_from(
            importers.boxes(path, fuzz_photos, multi_class="split").entries, Path(tmp) / "out", source=path))
