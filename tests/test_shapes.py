from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import chi2_contingency

from gate.errors import DataError
from gate.inputs import shapes


def test_same_arguments_give_byte_identical_samples() -> None:
    a = shapes.generate(12, bias=0.5, seed=3, size=32)
    b = list(shapes.iter_generate(12, bias=0.5, seed=3, size=32))
    assert [s.sample_id for s in a] == [s.sample_id for s in b]
    for x, y in zip(a, b, strict=True):
        assert x.image.tobytes() == y.image.tobytes()
        assert x.mask.tobytes() == y.mask.tobytes()
        assert (x.label, x.scene) == (y.label, y.scene)


def test_other_seed_gives_other_samples_and_prefix_is_stable() -> None:
    a = shapes.generate(8, bias=0.5, seed=3, size=32)
    longer = shapes.generate(20, bias=0.5, seed=3, size=32)
    other = shapes.generate(8, bias=0.5, seed=4, size=32)
    assert all(x.image.tobytes() == y.image.tobytes() for x, y in zip(a, longer[:8], strict=True))
    assert all(x.image.tobytes() != y.image.tobytes() for x, y in zip(a, other, strict=True))
    assert {s.sample_id for s in a}.isdisjoint(s.sample_id for s in other)
    assert a[5].sample_id == "s3-000005"


def test_types_and_shapes() -> None:
    sample = shapes.generate(1, bias=0.0, seed=1, size=40)[0]
    assert sample.image.dtype == np.uint8 and sample.image.shape == (40, 40, 3)
    assert sample.mask.dtype == np.bool_ and sample.mask.shape == (40, 40)
    assert 0 <= sample.label < 4 and 0 <= sample.scene < 4


@pytest.mark.parametrize("n", [8, 13])
def test_classes_are_balanced(n: int) -> None:
    counts = np.bincount([s.label for s in shapes.generate(n, bias=0.3, seed=5, size=16)], minlength=4)
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == n


def test_mask_area_and_object_inside() -> None:
    samples = shapes.generate(200, bias=0.0, seed=11, size=64)
    areas = np.array([s.mask.mean() for s in samples])
    assert areas.min() >= 0.08 and areas.max() <= 0.25
    for s in samples:  # fully inside: the border rows and columns are scene
        assert not (s.mask[0].any() or s.mask[-1].any() or s.mask[:, 0].any() or s.mask[:, -1].any())


def test_object_pixels_are_exactly_the_mask() -> None:
    # Re-render the sample's scene from the same generator state: outside the mask the image IS the scene,
    # inside it is one flat colour plus small noise, far from the scene's colours.
    seed, index, size = 9, 6, 64
    sample = shapes.make_sample(index, bias=0.0, seed=seed, size=size)
    rng = np.random.default_rng([seed, index, 0])
    rng.random()  # the bias draw
    rng.integers(4)  # the random scene (bias=0 always draws one)
    scene = shapes.render_scene(sample.scene, size, rng)
    mask = shapes.render_mask(sample.label, size, rng)
    assert np.array_equal(mask, sample.mask)
    assert np.array_equal(sample.image[~sample.mask], scene[~sample.mask])
    obj = sample.image[sample.mask].astype(np.int64)
    assert np.ptp(obj, axis=0).max() <= 2 * 6
    gap = np.abs(obj.mean(axis=0) - scene[sample.mask].astype(np.float64).mean(axis=0)).max()
    assert gap > 40


def test_object_differs_from_surrounding_scene_in_every_sample() -> None:
    for s in shapes.generate(100, bias=0.5, seed=2, size=32):
        inside = s.image[s.mask].astype(np.float64).mean(axis=0)
        outside = s.image[~s.mask].astype(np.float64)
        nearest = np.abs(outside - inside).max(axis=1).min()  # closest scene pixel, in max-channel distance
        assert nearest > 20


def test_bias_one_gives_the_class_away() -> None:
    samples = shapes.generate(80, bias=1.0, seed=4, size=16)
    assert all(s.scene == s.label for s in samples)


def test_bias_zero_makes_scene_independent_of_class() -> None:
    samples = shapes.generate(800, bias=0.0, seed=4, size=16)
    table = np.zeros((4, 4))
    for s in samples:
        table[s.label, s.scene] += 1
    assert table.min() > 20  # every scene occurs with every class
    assert chi2_contingency(table).pvalue > 0.01
    biased = np.zeros((4, 4))
    for s in shapes.generate(200, bias=0.5, seed=4, size=16):
        biased[s.label, s.scene] += 1
    assert chi2_contingency(biased).pvalue < 1e-6  # the test has power: bias=0.5 is detected
    assert 0.55 < np.trace(biased) / biased.sum() < 0.70  # P(own scene) = 0.5 + 0.5/4


def test_write_plain_layout(tmp_path: Path) -> None:
    samples = shapes.generate(6, bias=0.0, seed=1, size=24)
    out = shapes.write_plain(samples, tmp_path / "plain")
    assert out == tmp_path / "plain"
    for s in samples:
        name = shapes.CLASSES[s.label]
        image = Image.open(out / "images" / name / f"{s.sample_id}.png")
        mask = Image.open(out / "masks" / name / f"{s.sample_id}.png")
        assert image.mode == "RGB" and mask.mode == "L"
        assert np.array_equal(np.asarray(image), s.image)
        assert np.array_equal(np.asarray(mask), np.where(s.mask, 255, 0))
    written = sorted(p.relative_to(out).parts[0] for p in out.rglob("*.png"))
    assert written == ["images"] * 6 + ["masks"] * 6


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("synth:shapes?bias=1.0&n=6000&seed=7", {"bias": 1.0, "n": 6000, "seed": 7, "size": 64}),
        ("synth:shapes?seed=0&n=1&bias=0&size=32", {"bias": 0.0, "n": 1, "seed": 0, "size": 32}),
        ("synth:shapes?bias=0&n=4&seed=2&shortcut=tag",
         {"bias": 0.0, "n": 4, "seed": 2, "size": 64, "shortcut": "tag"}),
        ("synth:shapes?bias=0&n=4&seed=2&shortcut=cast&shortcut_bias=0.25",
         {"bias": 0.0, "n": 4, "seed": 2, "size": 64, "shortcut": "cast", "shortcut_bias": 0.25}),
    ],
)
def test_parse_synth_source(source: str, expected: dict[str, float]) -> None:
    parsed = shapes.parse_synth_source(source)
    assert parsed == expected
    assert isinstance(parsed["bias"], float) and isinstance(parsed["n"], int)


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ("synth:circles?bias=1&n=2&seed=1", "source"),
        ("shapes?bias=1&n=2&seed=1", "source"),
        ("synth:shapes?bias=1&n=2", "seed"),
        ("synth:shapes?bias=x&n=2&seed=1", "bias"),
        ("synth:shapes?bias=1.5&n=2&seed=1", "bias"),
        ("synth:shapes?bias=1&n=0&seed=1", "n"),
        ("synth:shapes?bias=1&n=2.5&seed=1", "n"),
        ("synth:shapes?bias=1&n=2&seed=1&size=8", "size"),
        ("synth:shapes?bias=1&n=2&seed=1&colour=red", "colour"),
        ("synth:shapes?bias=1&n=2&seed=1&shortcut=watermark", "shortcut"),
        ("synth:shapes?bias=1&n=2&seed=1&shortcut=", "shortcut"),
        ("synth:shapes?bias=1&n=2&seed=1&shortcut=frame,,tag", "shortcut"),
        ("synth:shapes?bias=1&n=2&seed=1&shortcut=frame&shortcut_bias=1.5", "shortcut_bias"),
        ("synth:shapes?bias=1&n=2&seed=1&shortcut=frame&shortcut_bias=nan", "shortcut_bias"),
        ("synth:shapes?bias=1&n=2&seed=1&shortcut_bias=0.5", "shortcut_bias"),
    ],
)
def test_parse_synth_source_rejects(source: str, field: str) -> None:
    with pytest.raises(DataError) as err:
        shapes.parse_synth_source(source)
    assert err.value.field == field
    assert err.value.exit_code == 2
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"n": 0}, "n"), ({"bias": -0.1}, "bias"), ({"size": 15}, "size")]
)
def test_generate_validates_arguments(kwargs: dict[str, float], field: str) -> None:
    args: dict[str, float] = {"n": 4, "bias": 0.5, "seed": 1, "size": 32, **kwargs}
    with pytest.raises(DataError) as err:
        shapes.generate(int(args["n"]), bias=args["bias"], seed=int(args["seed"]), size=int(args["size"]))
    assert err.value.field == field


def test_reserved_digest_is_the_shipped_review_set() -> None:
    from gate.inputs.review_set import digest_of
    from tests.conftest import SHIPPED_SET

    assert digest_of(SHIPPED_SET) in shapes.RESERVED_DIGESTS


@pytest.mark.parametrize("kind", shapes.SHORTCUTS)
def test_shortcut_leaves_the_plain_sample_outside_its_region(kind: str) -> None:
    plain = shapes.generate(8, bias=0.0, seed=5, size=40)
    cued = shapes.generate(8, bias=0.0, seed=5, size=40, shortcut=kind)
    for p, c in zip(plain, cued, strict=True):
        assert (p.sample_id, p.label, p.scene) == (c.sample_id, c.label, c.scene)
        assert c.cue == c.label  # shortcut_bias 1: every cue is the sample's class
        if kind == "cast":
            # An additive shift of the channels by the class's cast, wherever it does not clip.
            shift = c.image.astype(int) - p.image.astype(int)
            inside = (p.image.astype(int) + shapes._CASTS[c.label] > 0) & (p.image + shapes._CASTS[c.label] < 255)
            assert np.array_equal(shift[inside], np.broadcast_to(shapes._CASTS[c.label], shift.shape)[inside])
            assert np.array_equal(c.mask, p.mask)
            continue
        region = shapes.shortcut_region(kind, 40)
        assert np.array_equal(c.image[~region], p.image[~region])
        colour = shapes.tag_pattern(c.label, region) if kind == "tag" else shapes._CUE_COLOURS[c.label]
        assert np.abs(c.image[region].astype(float) - np.broadcast_to(colour, c.image.shape)[region]).max() <= 6
        assert np.array_equal(c.mask, p.mask & ~region)


def test_shortcut_regions_by_hand() -> None:
    frame = shapes.shortcut_region("frame", 40)  # 5% of 40 = 2 px band
    assert frame[:2].all() and frame[-2:].all() and frame[:, :2].all() and frame[:, -2:].all()
    assert not frame[2:-2, 2:-2].any()
    tag = shapes.shortcut_region("tag", 40)  # 15% of 40 = a 6 px square, bottom-right
    assert tag[-6:, -6:].all() and tag.sum() == 36


def test_tag_patterns_by_hand() -> None:
    region = np.zeros((6, 6), dtype=bool)
    region[2:6, 2:6] = True  # a 4 × 4 tag: halves of 2 px
    white = [shapes.tag_pattern(cue, region)[2:, 2:, 0] > 128 for cue in range(4)]
    assert not white[0].any() and white[1].all()
    assert np.array_equal(white[2], np.array([[False, False, True, True]] * 4))
    assert np.array_equal(white[3], np.array([[False] * 4] * 2 + [[True] * 4] * 2))


def test_shortcut_bias_zero_draws_cues_independent_of_class() -> None:
    samples = shapes.generate(400, bias=0.0, seed=8, size=16, shortcut="cast", shortcut_bias=0.0)
    table = np.zeros((4, 4), dtype=int)
    for s in samples:
        table[s.label, s.cue] += 1
    assert table.min() > 0
    assert chi2_contingency(table).pvalue > 0.01
    tied = shapes.generate(40, bias=0.0, seed=8, size=16, shortcut="cast", shortcut_bias=1.0)
    assert all(s.cue == s.label for s in tied)


def test_several_shortcuts_draw_independent_cues() -> None:
    both = shapes.generate(6, bias=0.0, seed=2, size=32, shortcut="frame,tag", shortcut_bias=1.0)
    plain = shapes.generate(6, bias=0.0, seed=2, size=32)
    frame, tag = shapes.shortcut_region("frame", 32), shapes.shortcut_region("tag", 32)
    for b, p in zip(both, plain, strict=True):
        assert np.array_equal(b.image[~(frame | tag)], p.image[~(frame | tag)])
        assert np.abs(b.image[tag].astype(float) - shapes.tag_pattern(b.label, tag)[tag]).max() <= 6
    with pytest.raises(DataError):
        shapes.generate(2, bias=0.0, seed=2, shortcut="frame,frame")


def test_palette_scene_is_the_default_stream_byte_for_byte() -> None:
    default = shapes.generate(8, bias=0.5, seed=3, size=32)
    explicit = shapes.generate(8, bias=0.5, seed=3, size=32, palette="scene")
    assert all(np.array_equal(a.image, b.image) and a.scene == b.scene for a, b in zip(default, explicit, strict=True))


def test_palette_random_repaints_only_the_scene_with_an_independent_palette() -> None:
    scene_coloured = shapes.generate(400, bias=1.0, seed=5, size=16)
    random_coloured = shapes.generate(400, bias=1.0, seed=5, size=16, palette="random")
    for a, b in zip(scene_coloured, random_coloured, strict=True):
        assert a.label == b.label and a.scene == b.scene and np.array_equal(a.mask, b.mask)
        assert np.array_equal(a.image[a.mask], b.image[b.mask])  # the object is untouched
    # By hand: each palette's mean colour is its two colours' midpoint; with palette=random the scene's mean
    # colour no longer tells the scene (nearest-palette guess at chance), with palette=scene it always does.
    centres = np.array([(np.add(*map(np.asarray, pair)) / 2) for pair in shapes._PALETTES])

    def guessed(sample: shapes.ShapeSample) -> int:
        mean = sample.image[~sample.mask].reshape(-1, 3).mean(0)
        return int(np.argmin(((centres - mean) ** 2).sum(1)))

    hits = [np.mean([guessed(s) == s.scene for s in samples]) for samples in (scene_coloured, random_coloured)]
    assert hits[0] >= 0.95
    assert 0.15 <= hits[1] <= 0.40  # chance is 0.25
    table = np.zeros((4, 4), dtype=int)
    for s in random_coloured:
        table[s.scene, guessed(s)] += 1
    assert chi2_contingency(table).pvalue > 0.01


def test_palette_is_a_source_parameter() -> None:
    parsed = shapes.parse_synth_source("synth:shapes?bias=1&n=4&seed=2&palette=random")
    assert parsed["palette"] == "random"
    with pytest.raises(DataError) as err:
        shapes.parse_synth_source("synth:shapes?bias=1&n=4&seed=2&palette=plaid")
    assert err.value.field == "palette" and err.value.exit_code == 2
    with pytest.raises(DataError) as err:
        shapes.generate(2, bias=0.0, seed=2, palette="")
    assert err.value.field == "palette"
