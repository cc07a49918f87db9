"""The comment step of the composite GitHub Action (action.yml, input ``comment: true``).

Keeps one comment on the pull request with the gate's verdict, reasons, baseline box and links; inputs come
as environment variables (see ``gate.outputs.pr_comment.comment_from_env``). Exits 0 when it commented or
skipped with a notice (not a pull request, a fork's read-only token, the API unreachable), 2 on bad input.
"""

from __future__ import annotations

import os
import sys

from gate.outputs.pr_comment import comment_from_env

if __name__ == "__main__":
    sys.exit(comment_from_env(os.environ, print))
