#!/usr/bin/env bash
# The install step of the composite GitHub Action (action.yml): xgate with the pinned versions of
# constraints.txt, into the job's Python (actions/setup-python). Inputs arrive as environment variables.
#   XGATE_TORCH_BUILD  cuda (default): torch from PyPI, built for CUDA 13.0 (~4 GB of wheels; the runner needs an
#                      NVIDIA driver >= 580.65.06). cpu: the CPU-only torch and torchvision wheels of the same
#                      versions from the PyTorch index (about 200 MB, no CUDA libraries), for CPU runners.
#   XGATE_TORCH_INDEX  optional: the index of the CPU wheels (default https://download.pytorch.org/whl/cpu), e.g.
#                      a company mirror
set -euo pipefail
root=${GITHUB_ACTION_PATH:-$(cd "$(dirname "$0")/.." && pwd)}
constraints="$root/constraints.txt"

case "${XGATE_TORCH_BUILD:-cuda}" in
  cuda) ;;
  cpu)
    # First the CPU wheels alone (torch==2.14.1+cpu satisfies the constraint torch==2.14.1), then xgate: pip
    # keeps the installed torch and takes its few pure-Python dependencies from PyPI.
    python -m pip install --quiet --no-deps --index-url "${XGATE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" \
      -c "$constraints" torch torchvision
    ;;
  *)
    echo "::error title=xgate::torch-build must be cuda or cpu, got '${XGATE_TORCH_BUILD}'"
    exit 2
    ;;
esac
python -m pip install --quiet -c "$constraints" "$root"
python -c 'import torch; print(f"xgate: torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")'
