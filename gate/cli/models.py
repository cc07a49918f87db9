"""Commands around a model: ``train``, ``pack``, ``inspect`` and ``layers``."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import click

from gate.cli.app import cli
from gate.cli.options import (
    MAX_INPUT_SIDE,
    parse_channels,
    parse_json_object,
    parse_meta,
    parse_pack_size,
    parse_size,
)
from gate.cli.progress import quiet, train_bar, train_line


@cli.command(epilog="""
\b
Examples:
  xgate train --recipe bgmix --data 'synth:shapes?bias=0.9&n=4000&seed=11' -o cand.pt
  xgate train --recipe cutmix --data review_sets/shapes-train --epochs 10 -o cand.pt
""")
@click.option("--recipe", required=True, help="baseline, cutmix or bgmix.")
@click.option("--data", required=True,
              help="synth:shapes?bias=B&n=N&seed=S[&shortcut=frame|tag|cast], an ImageFolder tree or a review set.")
@click.option("--arch", default="tiny_cnn", show_default=True, help="Built-in, torchvision name or pkg.mod:factory.")
@click.option("--epochs", default=8, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=0.1, show_default=True, type=float)
@click.option("--image-size", default=64, show_default=True, type=click.IntRange(16, 1024),
              help="Side the images are trained at (and the checkpoint's input size).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Checkpoint to write.")
def train(recipe: str, data: str, arch: str, epochs: int, seed: int, batch_size: int, lr: float, image_size: int,
          output: Path) -> None:
    """Train a candidate with a recipe and write an xgate.candidate/v1 checkpoint."""
    from gate.train import TrainConfig
    from gate.train import train as run_training

    config = TrainConfig(recipe=recipe, data=data, arch=arch, epochs=epochs, seed=seed, batch_size=batch_size,
                         lr=lr, image_size=image_size, output=output)
    silent = quiet()
    result = run_training(config, progress=None if silent else train_line,
                          batch_progress=None if silent else partial(train_bar, epochs))
    last = result.history[-1]
    click.echo(f"wrote {result.path}: train accuracy {last.train_accuracy:.3f}, "
               f"validation accuracy {last.val_accuracy:.3f} after {last.epoch} epochs")


PACK_EXAMPLES = """
\b
Examples:
  xgate pack resnet50-finetuned.pt --arch resnet50 --classes classes.txt --preset imagenet -o cand.pt
  xgate pack weights.safetensors --arch efficientnet_b0 --classes classes.json --preset imagenet \\
      --resize 232 --interpolation bicubic -o cand.safetensors
  xgate pack convnext.pt --arch timm:convnext_tiny --classes classes.txt -o cand.safetensors
  xgate pack models/vit-finetuned/ -o cand.safetensors      # a Hugging Face save_pretrained folder
  xgate pack state_dict.pth --arch tiny_cnn --arch-kwargs '{"width": 12}' --classes classes.txt \\
      --size 64,64 --mean 0.5,0.5,0.5 --std 0.25,0.25,0.25 --meta recipe=cutmix --meta epochs=16 -o cand.pt
"""


INSPECT_EXAMPLES = """
\b
Examples:
  xgate inspect candidates/bgmix.pt
  xgate inspect cand.safetensors --json
"""


@cli.command(epilog=PACK_EXAMPLES)
@click.argument("weights", type=click.Path(path_type=Path))
@click.option("--arch", help="torchvision model name, timm:NAME, xgate built-in or package.module:factory "
                             "(not for a Hugging Face folder).")
@click.option("--classes", "classes_file", type=click.Path(path_type=Path),
              help='Class names in output order: one per line, a JSON list, or JSON {"0": name, ...} '
                   "(not for a Hugging Face folder: its id2label).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Candidate to write (.safetensors: safetensors; otherwise a torch file).")
@click.option("--preset", type=click.Choice(["imagenet"]),
              help="imagenet: shorter side to 256, centre crop 224, bilinear, ImageNet mean/std.")
@click.option("--size", callback=parse_pack_size, metavar="H,W", help="Input size the model sees (the crop).")
@click.option("--resize", type=click.IntRange(1), help="Shorter side before the centre crop (else: squash).")
@click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest"]))
@click.option("--mean", callback=parse_channels, metavar="R,G,B", help="Per-channel mean on [0, 1] pixels.")
@click.option("--std", callback=parse_channels, metavar="R,G,B", help="Per-channel std on [0, 1] pixels.")
@click.option("--target-layer", help="Layer to explain (default: the family's, else the last Conv2d).")
@click.option("--arch-kwargs", callback=parse_json_object, metavar="JSON",
              help="Extra arguments for the arch (num_classes is the number of class names).")
@click.option("--meta", multiple=True, callback=parse_meta, metavar="KEY=VALUE", help="Recorded in meta.")
def pack(weights: Path, arch: str | None, classes_file: Path | None, output: Path, preset: str | None,
         size: tuple[int, int] | None, resize: int | None, interpolation: str | None,
         mean: tuple[float, float, float] | None, std: tuple[float, float, float] | None,
         target_layer: str | None, arch_kwargs: dict[str, Any], meta: dict[str, Any]) -> None:
    """Turn WEIGHTS (a state_dict: .pt, .pth or .safetensors; or a Hugging Face folder) into a candidate.

    The candidate is loaded back and checked by one forward. timm:NAME and Hugging Face folders bring their
    own preprocessing (timm's data config, the image processor); the options override it.
    """
    from gate.inputs.pack import PackRequest, Preprocessing, format_description
    from gate.inputs.pack import describe as describe_candidate
    from gate.inputs.pack import pack as pack_candidate

    preprocessing = Preprocessing(preset=preset, size=size, resize=resize, interpolation=interpolation,
                                  mean=mean, std=std)
    result = pack_candidate(PackRequest(weights=weights, arch=arch, classes_file=classes_file, output=output,
                                        preprocessing=preprocessing, arch_kwargs=arch_kwargs,
                                        target_layer=target_layer, meta=meta))
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {result.path}: loads and gives {len(result.candidate.classes)} outputs")
    click.echo(format_description(describe_candidate(result.path)))


@cli.command(epilog=INSPECT_EXAMPLES)
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every class name) instead of text.")
def inspect(candidate: Path, as_json: bool) -> None:
    """Print what the gate will use from CANDIDATE: format, arch, classes, input pipeline, target layer."""
    import json

    from gate.inputs.pack import describe, format_description

    info = describe(candidate)
    click.echo(json.dumps(info, indent=2) if as_json else format_description(info))


@cli.command("layers", epilog="""
\b
Examples:
  xgate layers candidates/bgmix.pt
  xgate layers vit.pt --maps-only
  xgate layers weights.pt --arch resnet50 --classes cat,dog --input-size 224,224 --target-layer layer3
""")
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--arch", help="Architecture for a bare state_dict.")
@click.option("--classes", help="Comma-separated class names for a bare state_dict.")
@click.option("--input-size", callback=parse_size, metavar="H,W",
              help="Sample input size (default: the checkpoint's).")
@click.option("--target-layer", help="Check that this layer exists and gives a map.")
@click.option("--maps-only", is_flag=True, help="List only the layers that give a Grad-CAM map.")
@click.option("--trust-pickle", is_flag=True, help="Allow a pickled nn.Module (runs code from the file).")
@click.option("--allow-arch-module", "allow_arch_module", multiple=True, metavar="PREFIX",
              help="Module prefix an import-path arch may come from (repeatable).")
@MAX_INPUT_SIDE
def layers_command(candidate: Path, arch: str | None, classes: str | None, input_size: tuple[int, int] | None,
                   target_layer: str | None, maps_only: bool, trust_pickle: bool,
                   allow_arch_module: tuple[str, ...], max_input_side: int) -> None:
    """List CANDIDATE's layers with their output shapes on a sample input, which give a map, and the default."""
    from gate.engine import layers
    from gate.errors import UsageError
    from gate.inputs import safe_import
    from gate.inputs.candidate import load
    from gate.inputs.pack import pipeline_text

    names = tuple(c.strip() for c in classes.split(",")) if classes else None
    safe_import.refuse_prefixes(allow_arch_module)
    with safe_import.allowing(allow_arch_module):
        cand = load(candidate, arch=arch, classes=names, input_size=input_size, trust_pickle=trust_pickle,
                    max_input_side=max_input_side)
    size = cand.input.size
    if min(size) <= 0:
        raise UsageError("the checkpoint has no input size; give --input-size H,W", field="--input-size")
    rows = layers.list_layers(cand.model, (int(size[0]), int(size[1])))
    default = layers.default_layer(cand.model)
    if target_layer is not None:
        layers.check_layer(rows, target_layer)
    click.echo(f"{candidate}: {cand.arch} ({cand.source}), sample input [B, 3, {size[0]}, {size[1]}], "
               f"default layer {default!r}")
    spec = cand.input
    click.echo(f"input: {pipeline_text(spec.size, spec.resize, spec.interpolation)}, {spec.pipeline} resampling, "
               f"from {cand.input_origin}")
    for line in layers.listing_lines(rows, default, target_layer, maps_only):
        click.echo(line)
