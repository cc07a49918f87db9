"""Review sets: build from the plain layout, open, verify; any change after pinning is an input error."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gate.errors import ReviewSetError
from gate.inputs import review_set, shapes
from gate.inputs.review_set import ReviewSet

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


# ----------------------------------------------------------------------------- the pin covers everything read


def rewrite_first_row(pinned: ReviewSet, **changes: str) -> Path:
    """Change columns of the first sample in samples.csv and re-pin, so only the path checks can fail."""
    path = pinned.root / "samples.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0].update(changes)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    review_set.write_sums(pinned.root)
    return path


def outside_png(tmp_path: Path) -> Path:
    path = tmp_path / "outside.png"
    Image.fromarray(np.full((16, 16, 3), 7, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(("column", "value", "needle"), [
    ("image", "{outside}", "must be relative"),
    ("image", "../outside.png", "leaves the review set"),
    ("mask", "masks/../../outside.png", "leaves the review set"),
    ("image", "./{first}", "plain form"),
    ("image", "images\\circle\\x.png", "'/' separators"),
    ("void", "{outside}", "must be relative"),
], ids=["absolute", "dotdot", "dotdot-inside", "dot", "backslash", "void-absolute"])
def test_paths_that_leave_the_folder_are_refused(
    tmp_path: Path, pinned: ReviewSet, column: str, value: str, needle: str
) -> None:
    outside = outside_png(tmp_path)
    value = value.format(outside=outside, first=pinned.samples[0].image)
    csv_path = rewrite_first_row(pinned, **{column: value})
    with pytest.raises(ReviewSetError) as info:
        review_set.open_review_set(pinned.root)
    assert info.value.path == f"{csv_path}:2" and info.value.field == column
    assert needle in info.value.message and info.value.exit_code == 2


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path, pinned: ReviewSet) -> None:
    outside = outside_png(tmp_path)
    image = first_image(pinned)
    image.unlink()
    image.symlink_to(outside)
    review_set.write_sums(pinned.root)  # even re-pinned: the content could change outside the folder
    with pytest.raises(ReviewSetError, match="resolves outside") as info:
        review_set.verify(pinned.root)
    assert info.value.path == str(image)
    with pytest.raises(ReviewSetError, match="resolves outside"):
        review_set.open_review_set(pinned.root, check=False)


def test_a_symlink_inside_the_folder_is_fine(pinned: ReviewSet) -> None:
    image, other = first_image(pinned), pinned.root / pinned.samples[1].image
    image.unlink()
    image.symlink_to(other)
    review_set.write_sums(pinned.root)
    opened = review_set.open_review_set(pinned.root)
    assert np.array_equal(opened.load_image(0), opened.load_image(1))


@pytest.mark.parametrize("name", ["Thumbs.db", ".DS_Store", "unlisted.png"])
def test_a_file_read_must_be_listed_in_the_sums(pinned: ReviewSet, name: str) -> None:
    hidden = pinned.root / "images" / "circle" / name
    hidden.write_bytes(first_image(pinned).read_bytes())  # a real image under an ignored or unlisted name
    csv_path = rewrite_first_row(pinned, image=f"images/circle/{name}")
    if name == "unlisted.png":  # write_sums lists every file it sees; take it out again by hand
        sums = pinned.root / "SHA256SUMS"
        sums.write_text("".join(line for line in sums.read_text().splitlines(keepends=True)
                                if not line.endswith(f"/{name}\n")))
    with pytest.raises(ReviewSetError) as info:
        # verify skips ignored names it finds (OS litter), so the listing check at open must catch them
        review_set.open_review_set(pinned.root, check=name != "unlisted.png")
    assert info.value.path == f"{csv_path}:2" and info.value.field == "image"
    assert "not listed in SHA256SUMS" in info.value.message


def test_sums_may_not_point_outside(pinned: ReviewSet) -> None:
    sums = pinned.root / "SHA256SUMS"
    sums.write_text(sums.read_text() + "0" * 64 + "  ../outside.png\n")
    with pytest.raises(ReviewSetError, match="leaves the review set") as info:
        review_set.verify(pinned.root)
    assert info.value.path is not None and info.value.path.endswith(f"SHA256SUMS:{2 + 2 * N + 1}")


def test_manifest_files_must_be_listed(pinned: ReviewSet) -> None:
    sums = pinned.root / "SHA256SUMS"
    sums.write_text("".join(line for line in sums.read_text().splitlines(keepends=True)
                            if not line.endswith("  review.yaml\n")))
    with pytest.raises(ReviewSetError) as info:
        review_set.open_review_set(pinned.root, check=False)
    assert info.value.field == "review.yaml"


@pytest.mark.parametrize("mangle", [
    lambda d: d[:-1],  # a prefix
    lambda d: d[:20],
    lambda d: d + "0",
    lambda d: d.upper(),
    lambda d: "sha256:",
    lambda d: d[:-1] + ("0" if d[-1] != "0" else "1"),
], ids=["prefix-63", "prefix-13", "longer", "upper", "empty", "last-digit"])
def test_the_digest_is_compared_exactly(pinned: ReviewSet, mangle: Any) -> None:
    wrong = mangle(pinned.digest)
    assert wrong != pinned.digest
    with pytest.raises(ReviewSetError) as info:
        review_set.verify(pinned.root, wrong)
    assert info.value.field == "digest"


def test_escape_through_the_cli_exits_2_with_one_line(
    tmp_path: Path, pinned: ReviewSet, capsys: pytest.CaptureFixture[str]
) -> None:
    from gate.cli import _run

    rewrite_first_row(pinned, image="../outside.png")
    assert _run(["review-set", "verify", str(pinned.root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "samples.csv:2: image:" in err[0] and "leaves" in err[0]


# ----------------------------------------------------------------------------- samples without masks, void


def test_an_empty_mask_column_means_no_mask(pinned: ReviewSet) -> None:
    rewrite_first_row(pinned, mask="")
    opened = review_set.open_review_set(pinned.root)
    assert opened.samples[0].mask == ""
    assert opened.load_mask(0) is None and opened.load_void(0) is None
    assert opened.has_mask.tolist() == [False] + [True] * (N - 1)
    assert opened.load_mask(1) is not None


def test_a_void_column_is_read(pinned: ReviewSet) -> None:
    void_rel = "void/first.png"
    (pinned.root / "void").mkdir()
    void = np.zeros((16, 16), dtype=np.uint8)
    void[0, :] = 255
    Image.fromarray(void).save(pinned.root / void_rel)
    rewrite_first_row(pinned, void=void_rel)
    opened = review_set.open_review_set(pinned.root)
    assert opened.samples[0].void == void_rel and opened.samples[1].void == ""
    assert np.array_equal(opened.load_void(0), void > 0)
    assert opened.load_void(1) is None


def test_a_missing_mask_column_is_an_error(pinned: ReviewSet) -> None:
    path = pinned.root / "samples.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(",".join(f for i, f in enumerate(line.split(",")) if i != 2) for line in lines) + "\n")
    review_set.write_sums(pinned.root)
    with pytest.raises(ReviewSetError) as info:
        review_set.open_review_set(pinned.root)
    assert info.value.field == "mask"


def test_a_mask_of_another_size_is_refused_at_read(pinned: ReviewSet) -> None:
    mask = pinned.root / pinned.samples[0].mask
    Image.new("L", (16, 12), 255).save(mask)
    review_set.write_sums(pinned.root)
    opened = review_set.open_review_set(pinned.root)
    with pytest.raises(ReviewSetError) as info:
        opened.load_mask(0)
    assert info.value.path == str(mask) and info.value.field == "mask"
    assert "(16, 12)" in info.value.message and "(16, 16)" in info.value.message


def test_a_pixel_bomb_in_a_review_set_names_the_file(pinned: ReviewSet) -> None:
    from tests.test_images import png_header_only

    image = first_image(pinned)
    png_header_only(image, 100_000, 100_000)
    review_set.write_sums(pinned.root)
    opened = review_set.open_review_set(pinned.root)
    with pytest.raises(ReviewSetError) as info:
        opened.load_image(0)
    assert info.value.path == str(image) and info.value.exit_code == 2


@pytest.mark.parametrize(("target", "content", "needle"), [
    ("samples.csv", b"id,image,mask,label\n\xff\xfe,images/x.png,,circle\n", "UnicodeDecodeError"),
    ("samples.csv", b"id,image,mask,label\na,images/a\x00.png,,circle\n", "control characters"),
    ("samples.csv", b'id,image,mask,label\n"a,images/a.png,,circle\n', "missing value"),
], ids=["not-utf8", "nul", "open-quote"])
def test_a_mangled_samples_csv_is_an_input_error(pinned: ReviewSet, target: str, content: bytes, needle: str) -> None:
    (pinned.root / target).write_bytes(content)
    review_set.write_sums(pinned.root)
    with pytest.raises(ReviewSetError) as info:
        review_set.open_review_set(pinned.root)
    assert needle in info.value.message and info.value.exit_code == 2


@pytest.mark.parametrize(("line", "needle"), [
    ("0" * 64 + "  review.yaml", "listed twice"),
    ("0" * 64 + "  " + "x" * 300 + "/y.png", "missing"),
    ("0" * 64 + "  ", "empty"),
    ("z" * 64 + "  review.yaml", "malformed"),
], ids=["twice", "name-too-long", "empty-path", "not-hex"])
def test_mangled_sums_lines(pinned: ReviewSet, line: str, needle: str) -> None:
    sums = pinned.root / "SHA256SUMS"
    sums.write_text(sums.read_text() + line + "\n")
    with pytest.raises(ReviewSetError) as info:
        review_set.verify(pinned.root)
    assert needle in info.value.message and info.value.exit_code == 2


def test_synth_and_build_through_the_cli(tmp_path: Path, plain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gate.cli import _run

    synth = tmp_path / "synth"
    args = ["--bias", "0.5", "--n", "8", "--seed", "11", "--size", "16", "-o", str(synth)]
    assert _run(["review-set", "synth", *args]) == 0
    built = tmp_path / "built"
    assert _run(["review-set", "build", str(plain), "-o", str(built), "--name", "tiny"]) == 0
    out = capsys.readouterr().out
    # the generator is deterministic: the same samples as the plain fixture, so the same images and masks
    assert review_set.verify(synth) in out and review_set.verify(built) in out
    assert "8 samples (8 with a mask), 4 classes" in out
    listed = {line.split("  ")[1] for line in (built / "SHA256SUMS").read_text().splitlines()}
    assert {line.split("  ")[1] for line in (synth / "SHA256SUMS").read_text().splitlines()} == listed
    assert _run(["review-set", "build", str(plain), "-o", str(built)]) == 2  # not empty any more
    assert "not empty" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_an_input_error(tmp_path: Path, plain: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(ReviewSetError, match="cannot write here") as info:
        review_set.build(plain, blocker / "set")
    assert info.value.path == str(blocker / "set") and info.value.exit_code == 2
