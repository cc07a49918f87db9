"""YAML as strict data: PyYAML's SafeLoader, minus the ways a file can say two things or blow up.

Refused, each as an input error naming the file, the line and the key path:
duplicate keys (PyYAML keeps the last silently: ``{min: 0.99, min: 0.10}``),
anchors and aliases (an alias bomb expands a few hundred bytes into gigabytes),
nesting deeper than ``max_depth`` and files larger than ``max_bytes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.events import NodeEvent
from yaml.nodes import MappingNode, Node, SequenceNode

from gate.errors import InputError

MAX_BYTES = 256 * 1024  # policies and review.yaml files are a few kilobytes
MAX_DEPTH = 32


class StrictYamlError(yaml.YAMLError):
    """A YAML document that is valid YAML but not strict data."""

    def __init__(self, message: str, line: int | None, where: str) -> None:
        self.message, self.line, self.where = message, line, where
        super().__init__(message)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, anchors/aliases and deep nesting."""

    max_depth = MAX_DEPTH

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._path: list[str] = []
        self._mapping_paths: dict[int, str] = {}  # id(mapping node) -> its key path, for duplicate-key messages

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Compose one node, refusing aliases/anchors and tracking the key path for messages."""
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's Composer is unannotated
        line = event.start_mark.line + 1 if event.start_mark else None
        # Refusing every anchor refuses every alias too: an alias needs an anchor before it (else PyYAML
        # stops at "found undefined alias"). An AliasEvent is a NodeEvent whose anchor is the one it names.
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise StrictYamlError(f"anchors (&{event.anchor}) are not allowed, nor aliases", line, self.where())
        self._path.append(_segment(parent, index))
        if len(self._path) > self.max_depth:
            raise StrictYamlError(f"nested deeper than {self.max_depth} levels", line, self.where())
        try:
            node = super().compose_node(parent, index)
            if isinstance(node, MappingNode):
                self._mapping_paths[id(node)] = self.where()
            return node
        finally:
            self._path.pop()

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose keys are all distinct (after YAML's own resolution: ``1`` and ``0x1`` collide)."""
        seen: dict[Any, int] = {}
        base = self._mapping_paths.get(id(node), "")
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise StrictYamlError("merge keys (<<) are not allowed", key_node.start_mark.line + 1, base)
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise StrictYamlError(f"duplicate key {key!r} (first at line {first})", line,
                                      f"{base}.{key}".lstrip("."))
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def where(self) -> str:
        """The key path being composed, e.g. ``rules[1].min``."""
        text = "".join(self._path).lstrip(".")
        return text if len(text) <= 80 else "..." + text[-77:]  # a 20,000-deep path stays one short line


def _segment(parent: Node | None, index: Any) -> str:
    if isinstance(parent, SequenceNode) and isinstance(index, int):
        return f"[{index}]"
    if isinstance(parent, MappingNode):
        return f".{index.value}" if isinstance(index, yaml.ScalarNode) else ".<key>"
    return ""


def loads(data: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one YAML document strictly; raises StrictYamlError or yaml.YAMLError."""
    loader = StrictLoader(data)
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_bounded(path: Path, max_bytes: int, error: type[InputError]) -> bytes:
    """The file's bytes, refusing (before reading them all) a file larger than ``max_bytes``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read the file ({exc.strerror or exc})", path=path) from None
    if len(data) > max_bytes:
        raise error(f"file larger than {max_bytes // 1024} KiB, the limit for this file", path=path, field="size")
    return data


def load_path(
    path: str | Path, error: type[InputError], *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """Read and parse a YAML file strictly; every problem is ``error`` naming the file, line and key."""
    path = Path(path)
    return parse(read_bounded(path, max_bytes, error), path, error, max_depth=max_depth)


def parse(data: bytes, path: Path, error: type[InputError], *, max_depth: int = MAX_DEPTH) -> Any:
    """``loads`` with every failure turned into ``error`` naming ``path``."""
    try:
        return loads(data, max_depth=max_depth)
    except StrictYamlError as exc:
        line = f" at line {exc.line}" if exc.line else ""
        raise error(f"{exc.message}{line}", path=path, field=exc.where or None) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid"
        raise error(f"not valid YAML{where} ({problem})", path=path) from None
    except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as exc:
        raise error(f"not valid YAML ({type(exc).__name__})", path=path) from None
