#!/usr/bin/env bash
# The demo (`make demo`): the cheater is rejected for looking at the background; bgmix, trained on the very
# same scene-biased data, passes; CutMix lowers confident mistakes but does not remove a shortcut; `select`
# picks the best honest candidate and says why each other one lost. Every gate is logged to the local
# MLflow store (sqlite:///mlflow.db). The candidates come from scripts/train_candidates.sh.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
policy=policies/strict.yaml
out=${XGATE_DEMO_OUT:-xgate-out}  # tests point this (and MLFLOW_TRACKING_URI) at a temporary folder

echo "== 1. cheater.pt (baseline recipe, scene = class in training): expected to FAIL on the explanation checks"
xgate check candidates/cheater.pt --policy "$policy" --out "$out"/cheater
cheater=$?
echo
echo "== 2. bgmix.pt (same data, objects pasted onto other scenes): expected to PASS"
xgate check candidates/bgmix.pt --policy "$policy" --out "$out"/bgmix
bgmix=$?
echo
echo "== 3. cutmix-biased.pt vs baseline-biased.pt (data as biased as the review set): fewer confident"
echo "      mistakes, still a scene reader: expected to FAIL"
xgate check candidates/cutmix-biased.pt --baseline candidates/baseline-biased.pt --policy "$policy" \
  --out "$out"/cutmix-vs-baseline
cutmix=$?
echo
echo "== 4. cutmix.pt against baseline.pt (the model in production) with policies/release.yaml: strict plus"
echo "      non-inferiority at 95% confidence: expected to PASS"
xgate check candidates/cutmix.pt --baseline candidates/baseline.pt --policy policies/release.yaml \
  --out "$out"/release
release=$?
echo
echo "== 5. select the best of all shipped candidates: expected to pick an honest one"
xgate select candidates/*.pt --policy "$policy" --out "$out"/select
selected=$?
echo
echo "Demo exit codes: cheater=$cheater (want 1), bgmix=$bgmix (want 0), cutmix-biased=$cutmix (want 1)," \
  "release=$release (want 0), select=$selected (want 0)"
echo "Reports: $out/*/report.html   History: .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"
[ "$cheater" = 1 ] && [ "$bgmix" = 0 ] && [ "$cutmix" = 1 ] && [ "$release" = 0 ] && [ "$selected" = 0 ]
