"""Candidates as safetensors files: tensors plus JSON metadata, no pickle at all.

A safetensors file is an 8-byte little-endian header length, a JSON header and
raw tensor bytes; loading it never runs code. An xgate candidate keeps the
fields of ``xgate.candidate/v1`` in the header's ``__metadata__`` (string to
string): ``format``, ``arch`` and ``target_layer`` as plain strings;
``arch_kwargs``, ``classes``, ``input`` and ``meta`` as JSON text. The tensors
are the state_dict. A safetensors file without xgate metadata (e.g. one saved
by another tool) reads as a bare state_dict, for ``--arch/--classes``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from gate.errors import CandidateError

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
PLAIN_FIELDS: tuple[str, ...] = ("format", "arch", "target_layer")
JSON_FIELDS: tuple[str, ...] = ("arch_kwargs", "classes", "input", "meta")


def is_safetensors(data: bytes) -> bool:
    """True when ``data`` starts like a safetensors file: a header length that fits, then a JSON object."""
    if len(data) < HEADER_LENGTH_BYTES + 2:
        return False
    length = int.from_bytes(data[:HEADER_LENGTH_BYTES], "little")
    # torch files start with b"PK" (zip) or a pickle opcode: read as a length, neither fits the file.
    return 2 <= length <= len(data) - HEADER_LENGTH_BYTES and data[HEADER_LENGTH_BYTES:HEADER_LENGTH_BYTES + 1] == b"{"


def read_payload(path: str | Path, data: bytes) -> dict[str, Any]:
    """The payload mapping the v1 reader takes; a file without xgate metadata gives the bare state_dict."""
    metadata = read_metadata(path, data)
    tensors = _tensors(path, data)
    if not tensors:
        raise CandidateError("safetensors file holds no tensors", path=path, field="state_dict")
    if not str(metadata.get("format", "")).startswith("xgate."):
        return dict(tensors)  # e.g. {"format": "pt"} from other tools: weights only
    payload: dict[str, Any] = {"state_dict": tensors}
    unknown = sorted(set(metadata) - set(PLAIN_FIELDS) - set(JSON_FIELDS))
    if unknown:
        raise CandidateError(f"unknown metadata keys {unknown[:5]} (known: {[*PLAIN_FIELDS, *JSON_FIELDS]})",
                             path=path, field=f"__metadata__.{unknown[0]}")
    for name in PLAIN_FIELDS:
        if name in metadata:
            payload[name] = metadata[name]
    for name in JSON_FIELDS:
        if name in metadata:
            payload[name] = _json_field(path, name, metadata[name])
    return payload


def read_metadata(path: str | Path, data: bytes) -> dict[str, str]:
    """The header's ``__metadata__`` (empty when absent); a malformed header is a CandidateError."""
    length = int.from_bytes(data[:HEADER_LENGTH_BYTES], "little")
    if length > MAX_HEADER_BYTES or HEADER_LENGTH_BYTES + length > len(data):
        raise CandidateError(f"safetensors header length {length} does not fit the file", path=path,
                             field="header")
    try:
        header = json.loads(data[HEADER_LENGTH_BYTES:HEADER_LENGTH_BYTES + length])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CandidateError(f"safetensors header is not JSON ({type(exc).__name__})", path=path,
                             field="header") from None
    if not isinstance(header, dict):
        raise CandidateError("safetensors header is not a JSON object", path=path, field="header")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CandidateError("'__metadata__' must map names to strings", path=path, field="__metadata__")
    return metadata


def _tensors(path: str | Path, data: bytes) -> dict[str, torch.Tensor]:
    try:
        return load_tensors(data)
    except (SafetensorError, ValueError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CandidateError(f"corrupt safetensors file ({first[:200]})", path=path, field="state_dict") from None


def _json_field(path: str | Path, name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CandidateError(f"metadata field is not JSON ({exc})", path=path,
                             field=f"__metadata__.{name}") from None


def encode(payload: Mapping[str, Any]) -> bytes:
    """A v1 payload (``state_dict`` plus fields) as safetensors bytes; tensors are copied to contiguous CPU."""
    state = payload["state_dict"]
    # Each tensor gets its own storage: safetensors refuses tensors that share memory (e.g. tied weights).
    tensors = {name: value.detach().cpu().contiguous().clone() for name, value in state.items()}
    metadata: dict[str, str] = {}
    for name in PLAIN_FIELDS:
        if payload.get(name) is not None:
            metadata[name] = str(payload[name])
    for name in JSON_FIELDS:
        if payload.get(name) is not None:
            metadata[name] = json.dumps(payload[name], sort_keys=True)
    return save_tensors(tensors, metadata=metadata)


def save(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (as ``torch.save`` would take it for v1) as a safetensors candidate file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(encode(payload))
    return out
