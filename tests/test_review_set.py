"""Review sets: build from the plain layout, open, verify; any change after pinning is an input error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gate import review_set, shapes
from gate.errors import ReviewSetError
from gate.review_set import ReviewSet

N = 8  # two samples of each of the four shape classes


@pytest.fixture(scope="module")
def samples() -> list[shapes.ShapeSample]:
    return shapes.generate(N, bias=0.5, seed=11, size=16)


@pytest.fixture
def plain(tmp_path: Path, samples: list[shapes.ShapeSample]) -> Path:
    return shapes.write_plain(samples, tmp_path / "plain")


@pytest.fixture
def pinned(tmp_path: Path, plain: Path) -> ReviewSet:
    return review_set.build(plain, tmp_path / "pinned", name="tiny", description="four shapes")


def test_build_then_open(pinned: ReviewSet, samples: list[shapes.ShapeSample]) -> None:
    assert pinned.name == "tiny" and pinned.description == "four shapes" and pinned.version == "1"
    assert pinned.classes == tuple(sorted(shapes.CLASSES))
    assert pinned.size == N
    by_id = {f"{shapes.CLASSES[s.label]}/{s.sample_id}": s for s in samples}
    assert {s.sample_id for s in pinned.samples} == set(by_id)
    for index, sample in enumerate(pinned.samples):
        source = by_id[sample.sample_id]
        assert pinned.classes[sample.label] == shapes.CLASSES[source.label]
        assert np.array_equal(pinned.load_image(index), source.image)
        assert np.array_equal(pinned.load_mask(index), source.mask)
    assert pinned.labels().tolist() == [s.label for s in pinned.samples]
    assert sorted(np.bincount(pinned.labels()).tolist()) == [2, 2, 2, 2]


def test_digest_is_sha256_of_the_sums_file(pinned: ReviewSet) -> None:
    expected = "sha256:" + hashlib.sha256((pinned.root / "SHA256SUMS").read_bytes()).hexdigest()
    assert pinned.digest == expected
    assert review_set.verify(pinned.root) == expected
    assert review_set.verify(pinned.root, expected) == expected
    assert review_set.verify(pinned.root, expected.removeprefix("sha256:")) == expected
    opened = review_set.open_review_set(pinned.root, expected_digest=expected)
    assert opened == pinned


def test_sums_list_every_file(pinned: ReviewSet) -> None:
    listed = {line.split("  ", 1)[1] for line in (pinned.root / "SHA256SUMS").read_text().splitlines()}
    on_disk = {p.relative_to(pinned.root).as_posix() for p in pinned.root.rglob("*") if p.is_file()}
    assert listed == on_disk - {"SHA256SUMS"}
    assert {"review.yaml", "samples.csv"} <= listed
    assert len(listed) == 2 + 2 * N


def test_the_same_source_pins_to_the_same_digest(tmp_path: Path, plain: Path, pinned: ReviewSet) -> None:
    again = review_set.build(plain, tmp_path / "again", name="tiny", description="four shapes")
    assert again.digest == pinned.digest


def first_image(pinned: ReviewSet) -> Path:
    return pinned.root / pinned.samples[0].image


def test_one_changed_byte_is_an_error_naming_the_file(pinned: ReviewSet) -> None:
    image = first_image(pinned)
    data = bytearray(image.read_bytes())
    data[-5] ^= 0x01  # inside the IEND chunk's CRC: the image may still decode, the checksum must not match
    image.write_bytes(bytes(data))
    with pytest.raises(ReviewSetError) as info:
        review_set.open_review_set(pinned.root)
    assert info.value.path == str(image)
    assert "checksum" in info.value.message
    assert info.value.exit_code == 2


def test_a_file_added_after_pinning_is_an_error(pinned: ReviewSet) -> None:
    extra = pinned.root / "images" / "circle" / "extra.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(extra)
    with pytest.raises(ReviewSetError) as info:
        review_set.verify(pinned.root)
    assert info.value.path == str(extra)
    assert "added after pinning" in info.value.message


def test_os_litter_is_ignored(pinned: ReviewSet) -> None:
    (pinned.root / "images" / ".DS_Store").write_bytes(b"\x00\x01")
    assert review_set.verify(pinned.root) == pinned.digest


def test_a_missing_file_is_an_error(pinned: ReviewSet) -> None:
    image = first_image(pinned)
    image.unlink()
    with pytest.raises(ReviewSetError, match="missing") as info:
        review_set.verify(pinned.root)
    assert info.value.path == str(image)


def test_wrong_expected_digest_names_the_digest_field(pinned: ReviewSet) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ReviewSetError) as info:
        review_set.open_review_set(pinned.root, expected_digest=wrong)
    assert info.value.field == "digest"
    assert wrong in info.value.message and pinned.digest in info.value.message


def test_unknown_label_names_line_and_field(pinned: ReviewSet) -> None:
    csv_path = pinned.root / "samples.csv"
    lines = csv_path.read_text().splitlines()
    # Line 1 is the header, so the second sample is line 3.
    sample_id, image, mask, _ = lines[2].split(",")
    lines[2] = ",".join([sample_id, image, mask, "hexagon"])
    csv_path.write_text("\n".join(lines) + "\n")
    review_set.write_sums(pinned.root)  # re-pin, so the checksum passes and parsing is what fails
    with pytest.raises(ReviewSetError) as info:
        review_set.open_review_set(pinned.root)
    assert info.value.path == f"{csv_path}:3"
    assert info.value.field == "label"
    assert "hexagon" in info.value.message


def test_an_edited_csv_without_repinning_is_a_checksum_error(pinned: ReviewSet) -> None:
    csv_path = pinned.root / "samples.csv"
    csv_path.write_text(csv_path.read_text().replace("circle", "square", 1))
    with pytest.raises(ReviewSetError, match="checksum") as info:
        review_set.open_review_set(pinned.root)
    assert info.value.path == str(csv_path)


def test_missing_sums_is_an_error(pinned: ReviewSet) -> None:
    (pinned.root / "SHA256SUMS").unlink()
    with pytest.raises(ReviewSetError, match="SHA256SUMS"):
        review_set.open_review_set(pinned.root)


def write_pair(root: Path, cls: str, name: str, image_size: tuple[int, int], mask_size: tuple[int, int]) -> Path:
    for kind, size, mode in (("images", image_size, "RGB"), ("masks", mask_size, "L")):
        folder = root / kind / cls
        folder.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size).save(folder / f"{name}.png")
    return root / "masks" / cls / f"{name}.png"


def test_mask_size_mismatch_at_build(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_pair(source, "cat", "a", (16, 16), (16, 16))
    bad_mask = write_pair(source, "dog", "b", (16, 16), (8, 16))
    with pytest.raises(ReviewSetError) as info:
        review_set.build(source, tmp_path / "out")
    assert info.value.path == str(bad_mask)
    assert "(8, 16)" in info.value.message and "(16, 16)" in info.value.message


def test_missing_mask_at_build(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_pair(source, "cat", "a", (16, 16), (16, 16))
    write_pair(source, "dog", "b", (16, 16), (16, 16))
    (source / "masks" / "dog" / "b.png").unlink()
    with pytest.raises(ReviewSetError) as info:
        review_set.build(source, tmp_path / "out")
    assert info.value.field == "mask"
    assert info.value.path == str(source / "images" / "dog" / "b.png")


def test_one_class_is_not_a_review_set(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_pair(source, "cat", "a", (16, 16), (16, 16))
    with pytest.raises(ReviewSetError) as info:
        review_set.build(source, tmp_path / "out")
    assert info.value.field == "classes"


def test_build_refuses_a_non_empty_output(tmp_path: Path, plain: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ReviewSetError, match="not empty"):
        review_set.build(plain, out)
    assert (out / "keep.txt").read_text() == "mine"
