"""``xgate review-set``: build, verify and synthesise pinned review sets."""

from __future__ import annotations

from pathlib import Path

import click

from gate.cli.app import cli


@cli.group("review-set")
def review_set() -> None:
    """Build, verify and synthesise pinned review sets."""


@review_set.command("build", epilog="""
\b
Examples (formats: docs/importing.md):
  xgate review-set build photos/ -o review_sets/my-set --name my-set
  xgate review-set build photos/ --allow-missing-masks -o review_sets/my-set
  xgate review-set build photos/ --no-masks -o review_sets/my-set    (photos/<class>/*.jpg)
  xgate review-set build voc/ --voc -o review_sets/my-set
  xgate review-set build --coco instances.json --images photos/ -o review_sets/my-set
  xgate review-set build --boxes boxes.csv --images photos/ -o review_sets/my-set
""")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
@click.option("--name", help="Name recorded in review.yaml (default: the output folder's name).")
@click.option("--version", "set_version", default="1", show_default=True)
@click.option("--description", default="")
@click.option("--coco", type=click.Path(path_type=Path), help="COCO instances JSON (needs --images).")
@click.option("--boxes", type=click.Path(path_type=Path), help="CSV image,label,x0,y0,x1,y1 (needs --images).")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), help="Folder the COCO/CSV paths are in.")
@click.option("--voc", is_flag=True, help="SOURCE's masks are VOC palette PNGs (0 background, 255 void).")
@click.option("--voc-classes", type=click.Path(path_type=Path),
              help="Class names in palette order (implies --voc): the object is its class's index only.")
@click.option("--allow-missing-masks", is_flag=True, help="Pin images without a mask file as mask-less samples.")
@click.option("--no-masks", is_flag=True,
              help="SOURCE is a plain folder of class subfolders (SOURCE/<class>/*): pin every image without a mask.")
@click.option("--multi-class", type=click.Choice(["skip", "split"]), default="skip", show_default=True,
              help="An image with objects of several classes: skip it, or one sample per class.")
@click.option("--unlabelled", type=click.Choice(["skip", "folder", "error"]), default="skip", show_default=True,
              help="A COCO image without annotation: skip it, take its class from its folder, or refuse.")
def review_set_build(
    source: Path | None, output: Path, name: str | None, set_version: str, description: str, coco: Path | None,
    boxes: Path | None, images_dir: Path | None, voc: bool, voc_classes: Path | None, allow_missing_masks: bool,
    no_masks: bool, multi_class: str, unlabelled: str,
) -> None:
    """Pin SOURCE/images/<class>/* + SOURCE/masks/<class>/* (or a COCO JSON, or a boxes CSV) as a review set."""
    from gate.inputs import importers
    from gate.inputs.coco import coco as import_coco
    from gate.inputs.review_set import build_from

    chosen = [flag for flag, given in (("SOURCE", source), ("--coco", coco), ("--boxes", boxes)) if given]
    if len(chosen) != 1:
        raise click.UsageError("give one source: SOURCE (a folder), --coco FILE or --boxes FILE")
    if (coco or boxes) and images_dir is None:
        raise click.UsageError(f"{chosen[0]} needs --images DIR (the folder its image paths are relative to)")
    if source is None and (voc or voc_classes or allow_missing_masks or no_masks):
        raise click.UsageError("--voc, --voc-classes, --allow-missing-masks and --no-masks apply to a SOURCE folder")
    if coco is not None and images_dir is not None:
        found = import_coco(coco, images_dir, multi_class=multi_class, unlabelled=unlabelled)
    elif boxes is not None and images_dir is not None:
        found = importers.boxes(boxes, images_dir, multi_class=multi_class)
    else:
        assert source is not None  # one source was chosen above
        names = importers.read_class_list(voc_classes) if voc_classes else None
        found = importers.plain(source, allow_missing_masks=allow_missing_masks, voc=voc, voc_classes=names,
                                no_masks=no_masks)
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    built = build_from(found.entries, output, source=coco or boxes or source or output, name=name,
                       version=set_version, description=description)
    masked = int(built.has_mask.sum())
    click.echo(f"{built.root}: {built.size} samples ({masked} with a mask), {len(built.classes)} classes, "
               f"digest {built.digest}")


@review_set.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--digest", help="Also require this digest.")
def review_set_verify(path: Path, digest: str | None) -> None:
    """Check every file of a review set against SHA256SUMS and print its digest."""
    from gate.inputs.review_set import open_review_set

    opened = open_review_set(path, expected_digest=digest)
    click.echo(f"{opened.root}: OK, {opened.size} samples, digest {opened.digest}")


@review_set.command("synth", epilog="""
\b
Example (the shipped review set):
  xgate review-set synth --bias 0.9 --n 400 --seed 20260 -o review_sets/shapes-v1
""")
@click.option("--bias", required=True, type=click.FloatRange(0, 1), help="0: scene independent of class; 1: tied.")
@click.option("--n", "count", required=True, type=click.IntRange(2), help="Number of samples.")
@click.option("--seed", required=True, type=int)
@click.option("--size", default=64, show_default=True, type=click.IntRange(16))
@click.option("--shortcut", type=click.Choice(["frame", "tag", "cast"]), help="Add a class-coded shortcut.")
@click.option("--shortcut-bias", default=1.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of samples whose shortcut matches their class.")
@click.option("--palette", default="scene", show_default=True, type=click.Choice(["scene", "random"]),
              help="scene: each scene has its own colours; random: colours drawn apart from the scene (texture only).")
@click.option("--name", help="Name recorded in review.yaml (default: the folder's name).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
def review_set_synth(bias: float, count: int, seed: int, size: int, shortcut: str | None, shortcut_bias: float,
                     palette: str, name: str | None, output: Path) -> None:
    """Generate coloured shapes on textured scenes (exact masks) and pin them as a review set."""
    import tempfile

    from gate.inputs import shapes
    from gate.inputs.review_set import build

    with tempfile.TemporaryDirectory() as tmp:
        samples = shapes.iter_generate(count, bias=bias, seed=seed, size=size, shortcut=shortcut,
                                       shortcut_bias=shortcut_bias, palette=palette)
        plain = shapes.write_plain(samples, Path(tmp))
        description = f"shapes generator: bias={bias}, n={count}, seed={seed}, size={size}"
        if shortcut is not None:
            description += f", shortcut={shortcut}, shortcut_bias={shortcut_bias}"
        if palette != "scene":
            description += f", palette={palette}"
        built = build(plain, output, name=name, description=description)
    click.echo(f"{built.root}: {built.size} samples, digest {built.digest}")
