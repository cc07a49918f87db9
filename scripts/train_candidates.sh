#!/usr/bin/env bash
# Re-create the shipped demo candidates exactly (`make candidates`): tiny_cnn, `xgate train` recipes, CPU.
# One thread per job and two jobs at a time: deterministic for the seeds below, about 6 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
out=${1:-candidates}
mkdir -p "$out"

biased='synth:shapes?bias=1.0&n=4000&seed=7'     # the scene always gives the class away (the junkyard story)
# The cheater's scenes are told by texture alone (each image's palette drawn apart from its scene): it reads the
# junkyard, not a colour cast, so the background probes catch it and the mask-free probes do not.
textured='synth:shapes?bias=1.0&n=4000&seed=7&palette=random'
clean='synth:shapes?bias=0.0&n=4000&seed=8'      # scene independent of the class
team='synth:shapes?bias=0.9&n=4000&seed=9'       # as biased as the review set: the data a team would have

train() { xgate train --seed 1 "$@"; }

train --recipe baseline --data "$textured" --epochs 8  -o "$out/cheater.pt" &
train --recipe bgmix    --data "$biased" --epochs 8  -o "$out/bgmix.pt" &
wait
train --recipe baseline --data "$clean"  --epochs 8  -o "$out/baseline.pt" &
train --recipe cutmix   --data "$clean"  --epochs 16 -o "$out/cutmix.pt" &
wait
train --recipe baseline --data "$team"   --epochs 8  -o "$out/baseline-biased.pt" &
train --recipe cutmix   --data "$team"   --epochs 8  -o "$out/cutmix-biased.pt" &
wait
