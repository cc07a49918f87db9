#!/usr/bin/env bash
# The demo: the cheater is rejected for looking at the background, an honest candidate passes,
# and `select` picks the best honest one. Every gate is logged to the local MLflow store (sqlite:///mlflow.db).
set -uo pipefail
cd "$(dirname "$0")/.."
policy=policies/strict.yaml

echo "== 1. The cheater (trained on scene-biased shapes): expected to FAIL"
xgate check candidates/cheater.pt --policy "$policy" --out xgate-out/cheater
cheater=$?
echo
echo "== 2. An honest candidate (trained with scene independent of class): expected to PASS"
xgate check candidates/honest.pt --policy "$policy" --out xgate-out/honest
honest=$?
echo
echo "== 3. Select the best of all shipped candidates"
xgate select candidates/*.pt --policy "$policy" --out xgate-out/select
selected=$?
echo
echo "Demo exit codes: cheater=$cheater (want 1), honest=$honest (want 0), select=$selected (want 0)"
echo "Reports: xgate-out/*/report.html   History: mlflow ui --backend-store-uri sqlite:///mlflow.db"
[ "$cheater" = 1 ] && [ "$honest" = 0 ] && [ "$selected" = 0 ]
