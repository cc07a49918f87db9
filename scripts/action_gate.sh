#!/usr/bin/env bash
# The gate step of the composite GitHub Action (action.yml). Inputs arrive as environment variables, never
# pasted into the script, so a candidate path or an extra argument cannot inject shell code.
#   XGATE_COMMAND    check | select
#   XGATE_CANDIDATES one or more checkpoint paths, separated by spaces
#   XGATE_POLICY     policy YAML
#   XGATE_BASELINE   optional: checkpoint or models:/NAME@ALIAS
#   XGATE_OUT        output folder (report.html, result.json, junit.xml)
#   XGATE_TRACKING_URI  optional: MLflow server; without it the gate does not log to MLflow
#   XGATE_ARGS       optional: more xgate options, split on spaces
# xgate itself writes the job summary, the ::error annotations and the step outputs (verdict, selected, report,
# json, junit); this script adds the exit code as an output and exits with it.
set -uo pipefail

case "${XGATE_COMMAND:-check}" in
  check|select) ;;
  *) echo "::error title=xgate::command must be check or select, got '${XGATE_COMMAND}'"; exit 2 ;;
esac
read -ra candidates <<< "${XGATE_CANDIDATES:-}"
if [ "${#candidates[@]}" -eq 0 ] || [ -z "${XGATE_POLICY:-}" ]; then
  echo "::error title=xgate::the candidate and policy inputs are required"
  exit 2
fi
read -ra extra <<< "${XGATE_ARGS:-}"
options=(--policy "$XGATE_POLICY" --out "${XGATE_OUT:-xgate-out}")
if [ -n "${XGATE_BASELINE:-}" ]; then
  options+=(--baseline "$XGATE_BASELINE")
fi
if [ -n "${XGATE_TRACKING_URI:-}" ]; then
  options+=(--tracking-uri "$XGATE_TRACKING_URI")
else
  options+=(--no-mlflow)
fi

xgate "${XGATE_COMMAND:-check}" "${candidates[@]}" "${options[@]}" "${extra[@]}"
code=$?
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  echo "exit-code=$code" >> "$GITHUB_OUTPUT"
fi
exit "$code"
