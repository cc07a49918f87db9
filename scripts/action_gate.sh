#!/usr/bin/env bash
# The gate step of the composite GitHub Action (action.yml). Inputs arrive as environment variables, never
# pasted into the script, so a candidate path or an extra argument cannot inject shell code.
#   XGATE_COMMAND       check | select
#   XGATE_CANDIDATES    checkpoints or globs (models/*.pt, models/**/*.pt), one per line; a line is split like a
#                       shell command line (quote a path with spaces); a glob that matches nothing is an error
#   XGATE_POLICY        policy YAML
#   XGATE_BASELINE      optional: checkpoint or models:/NAME@ALIAS
#   XGATE_OUT           output folder (report.html, result.json, junit.xml)
#   XGATE_TRACKING_URI  optional: MLflow server; without it the gate does not log to MLflow
#   XGATE_ARGS          optional: more xgate options, one or more per line, split like a shell command line
#                       ("my exp" stays one word, $(...) and globs stay text: nothing is expanded or run)
#   XGATE_FAIL_ON       fail (default) | never: advisory mode, a failed policy (exit 1) lets the step succeed
#   XGATE_TORCHRUN      optional: processes per node (N or gpu); above 1, xgate runs under torchrun --standalone
# xgate itself writes the job summary, the ::error annotations and the step outputs (verdict, selected, report,
# json, junit, mlflow-run-id, mlflow-run-ids, mlflow-run-url); this script adds exit-code and exits with it
# (0 in advisory mode when the policy failed). Bad inputs exit 2, as xgate does.
# A candidate is a file name from the repository, chosen by whoever writes to it: it goes after `--`, so a file
# named `--frame-cache=.pt` or `-h.pt` is a candidate, never an option, and every text this script puts into a
# workflow command is escaped (a name with a newline cannot start a `::warning` line of its own).
set -uo pipefail
shopt -s nullglob globstar

output() {  # key value: one step output, when run as a GitHub Actions step
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    printf '%s=%s\n' "$1" "$2" >> "$GITHUB_OUTPUT"
  fi
}

escape() {  # text: escaped as a workflow command's message (%25, %0D, %0A as GitHub documents)
  local text=${1//%/%25}
  text=${text//$'\r'/%0D}
  printf '%s' "${text//$'\n'/%0A}"
}

fail() {  # message: an error annotation, exit code 2 (bad input) as an output, then exit 2
  echo "::error title=xgate::$(escape "$1")"
  output exit-code 2
  exit 2
}

split_lines() {  # text: its words, NUL-separated; each line split as a shell would, with nothing expanded
  "${XGATE_PYTHON:-python3}" -c '
import shlex, sys
for number, line in enumerate(sys.argv[1].splitlines(), 1):
    try:
        words = shlex.split(line, comments=True)
    except ValueError as error:
        sys.exit(f"line {number} ({line.strip()!r}): {error}")
    sys.stdout.write("".join(word + "\0" for word in words))
' "$1"
}

read_words() {  # input-name text: sets the array `words`
  local parsed error
  parsed=$(mktemp)
  if ! error=$(split_lines "$2" 2>&1 > "$parsed"); then
    rm -f "$parsed"
    fail "cannot split the $1 input: $error"
  fi
  mapfile -d '' words < "$parsed"
  rm -f "$parsed"
}

expand_candidates() {  # sets `candidates` from `words`: globs expanded (sorted), plain paths kept as they are
  local word
  local -a matches
  candidates=()
  for word in "${words[@]}"; do
    if [[ $word == *[*?[]* ]] && [ ! -e "$word" ]; then  # a file literally named model[1].pt stays itself
      local IFS=  # split nothing: only the glob expands
      # shellcheck disable=SC2206  # the unquoted expansion is the glob itself; IFS is empty
      matches=($word)
      unset IFS
      if [ "${#matches[@]}" -eq 0 ]; then
        fail "the candidate glob '$word' matched no file (in $PWD); check the path, or that an earlier step wrote the checkpoints"
      fi
      candidates+=("${matches[@]}")
    else
      candidates+=("$word")
    fi
  done
}

command=${XGATE_COMMAND:-check}
case "$command" in
  check|select) ;;
  *) fail "command must be check or select, got '$command'" ;;
esac
fail_on=${XGATE_FAIL_ON:-fail}
case "$fail_on" in
  fail|never) ;;
  *) fail "fail-on must be fail or never, got '$fail_on'" ;;
esac
torchrun=${XGATE_TORCHRUN:-}
if [ -n "$torchrun" ] && ! [[ $torchrun =~ ^([1-9][0-9]*|gpu)$ ]]; then
  fail "torchrun must be a number of processes per node (e.g. 4) or gpu (one per GPU), got '$torchrun'"
fi

read_words candidate "${XGATE_CANDIDATES:-}"
expand_candidates
if [ "${#candidates[@]}" -eq 0 ] || [ -z "${XGATE_POLICY:-}" ]; then
  fail "the candidate and policy inputs are required"
fi
if [ "$command" = check ] && [ "${#candidates[@]}" -gt 1 ]; then
  fail "command check gates one candidate, but the candidate input gave ${#candidates[@]} files (${candidates[*]}); use command: select"
fi
read_words args "${XGATE_ARGS:-}"
extra=("${words[@]}")

options=(--policy "$XGATE_POLICY" --out "${XGATE_OUT:-xgate-out}")
if [ -n "${XGATE_BASELINE:-}" ]; then
  options+=(--baseline "$XGATE_BASELINE")
fi
if [ -n "${XGATE_TRACKING_URI:-}" ]; then
  options+=(--tracking-uri "$XGATE_TRACKING_URI")
else
  options+=(--no-mlflow)
fi

runner=(xgate)
if [ -n "$torchrun" ] && [ "$torchrun" != 1 ]; then
  runner=(torchrun --standalone --nproc-per-node "$torchrun" -m gate)  # rank 0 writes outputs; all exit alike
fi

# Options first, then `--`: whatever a candidate's name looks like, xgate reads it as a candidate.
"${runner[@]}" "$command" "${options[@]}" "${extra[@]}" -- "${candidates[@]}"
code=$?
output exit-code "$code"
if [ "$code" -eq 1 ] && [ "$fail_on" = never ]; then
  echo "::warning title=xgate::the candidate failed the policy; fail-on: never (advisory mode) lets the job go on"
  exit 0
fi
exit "$code"
