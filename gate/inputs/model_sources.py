"""Where a model comes from: torchvision, timm, a Hugging Face folder, xgate's built-ins or an import path.

timm and transformers are optional (``pip install 'xgate[timm]'`` / ``'xgate[hf]'``) and imported only
when a model needs them, never at ``xgate --help``. Nothing here touches the network: the hub libraries
are told to stay offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``) around every call into them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from gate.errors import CandidateError

TIMM_PREFIX = "timm:"
HF_PREFIX = "transformers:"
EXTRAS = {"timm": "timm", "transformers": "hf"}
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
# owner/name as the Hugging Face hub spells ids; a local path that does not exist and reads like this is one.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt", ".pkl")


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """The hub libraries' offline switches on for the duration (restored after): no call may download."""
    saved = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    os.environ.update({name: "1" for name in OFFLINE_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def require(package: str, field: str = "arch") -> ModuleType:
    """Import an optional library (offline); missing, an input error naming the extra to install."""
    try:
        with offline():
            return importlib.import_module(package)
    except ImportError:
        extra = EXTRAS.get(package, package)
        raise CandidateError(f"this model needs {package}: pip install 'xgate[{extra}]'", field=field) from None


def hub_id_error(path: Path) -> CandidateError | None:
    """An input error for a path that does not exist and reads like a hub id (``google/vit-base-patch16-224``)."""
    text = str(path)
    if path.exists() or not _HUB_ID.match(text) or text.lower().endswith(_WEIGHT_SUFFIXES):
        return None
    return CandidateError(f"{text!r} is not a local path; it reads like a Hugging Face hub id, and xgate never "
                          "downloads: save the model first (e.g. `hf download "
                          f"{text} --local-dir models/{text.split('/')[-1]}`) and give that folder",
                          path=path, field="path")
