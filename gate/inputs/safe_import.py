"""Which import-path archs (``package.module:factory``) a checkpoint may name.

A checkpoint is untrusted data, so it never chooses code to run: an import-path
arch is code from the repository under test (the current working tree), like its
tests, or from a module prefix the user allows on the trusted side
(``--allow-arch-module``, or ``candidate: {allow_modules: [...]}`` in the policy).
The standard library and installed packages are refused, and every check runs
BEFORE anything is imported: ``importlib.util.find_spec`` on a dotted name imports
its parent packages, so the top-level package's location is checked first.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import site
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate.errors import CandidateError

_ARCH = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*)$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_OWN_PACKAGE = __name__.partition(".")[0]
_HINT = "import-path archs must come from the working tree or a prefix allowed with --allow-arch-module"


@dataclass(frozen=True)
class ImportRule:
    """Where import-path archs may come from: the working tree ``root`` and allowed module prefixes."""

    root: Path | None = None  # None: the current working directory at check time
    prefixes: tuple[str, ...] = ()

    def tree(self) -> Path:
        """The working tree, resolved."""
        return (self.root or Path.cwd()).resolve()


_RULE: ContextVar[ImportRule | None] = ContextVar("xgate_import_rule", default=None)


def valid_prefix(prefix: str) -> bool:
    """True for a dotted module name such as ``mylab.models``."""
    return bool(_MODULE.match(prefix))


@contextlib.contextmanager
def allowing(prefixes: Iterable[str] = (), root: Path | None = None) -> Iterator[ImportRule]:
    """Within the block, import-path archs may also come from ``prefixes`` (and from ``root``)."""
    rule = ImportRule(root=root, prefixes=tuple(prefixes))
    token = _RULE.set(rule)
    try:
        yield rule
    finally:
        _RULE.reset(token)


def import_factory(arch: str) -> Callable[..., Any]:
    """The callable behind ``package.module:factory``, imported only when the rule allows its module."""
    match = _ARCH.match(arch)
    if match is None:
        raise CandidateError(f"arch {arch!r} is not of the form package.module:factory", field="arch")
    module_name, attr = match["module"], match["attr"]
    if attr.startswith("__"):
        raise CandidateError(f"arch {arch!r} names a private attribute", field="arch")
    rule = _RULE.get() or ImportRule()
    check_module(module_name, rule, arch)
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise CandidateError(f"cannot import arch {arch!r}: {exc}", field="arch") from None
    except Exception as exc:  # the module's own code failed (a SyntaxError, a raise at import): bad input
        raise CandidateError(f"importing arch {arch!r} failed ({type(exc).__name__}: {exc})"[:300],
                             field="arch") from None
    if not callable(factory):
        raise CandidateError(f"arch {arch!r} is not callable", field="arch")
    # A trusted module may itself import `system` from os: the factory must be DEFINED in allowed code.
    defined_in = getattr(factory, "__module__", None)
    if not isinstance(defined_in, str) or not _defined_in_allowed(defined_in, rule):
        raise CandidateError(f"arch {arch!r} is not allowed: {attr!r} is defined in {defined_in!r}, "
                             f"not in the module's own code; {_HINT}", field="arch")
    return factory  # type: ignore[no-any-return]  # getattr of an imported module: checked callable above


def check_module(module_name: str, rule: ImportRule, arch: str) -> None:
    """Refuse ``module_name`` unless it is under an allowed prefix or its files lie in the working tree."""
    if _under_prefix(module_name, rule.prefixes):
        return
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        raise CandidateError(f"arch {arch!r} is not allowed: {top!r} is the standard library; {_HINT}",
                             field="arch")
    if top == _OWN_PACKAGE:  # xgate's own code (its CLI, its writers) is not a model factory; built-ins go by name
        raise CandidateError(f"arch {arch!r} is not allowed: {top!r} is xgate itself (name a built-in arch "
                             f"instead); {_HINT}", field="arch")
    spec = _find_spec(top, arch)  # a top-level name: finders only, no package code runs
    _check_locations(spec, rule, arch, top)
    if module_name != top:
        # The top-level package is now known to be the tree's own code, so importing it (as find_spec does
        # for the parents of a dotted name) runs only trusted code.
        _check_locations(_find_spec(module_name, arch), rule, arch, module_name)


def _find_spec(name: str, arch: str) -> Any:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError) as exc:
        raise CandidateError(f"cannot import arch {arch!r}: {exc}", field="arch") from None
    if spec is None:
        raise CandidateError(f"cannot import arch {arch!r}: no module named {name!r}", field="arch")
    return spec


def _check_locations(spec: Any, rule: ImportRule, arch: str, name: str) -> None:
    places = [Path(p) for p in (spec.submodule_search_locations or [])]
    if spec.origin and spec.has_location:
        places.append(Path(spec.origin))
    if not places:
        raise CandidateError(f"arch {arch!r} is not allowed: {name!r} has no source file ({spec.origin}); {_HINT}",
                             field="arch")
    tree = rule.tree()
    for place in places:
        resolved = place.resolve()
        if not resolved.is_relative_to(tree) or _installed(resolved):
            raise CandidateError(f"arch {arch!r} is not allowed: {name!r} is installed at {place}, outside the "
                                 f"working tree {tree}; {_HINT}", field="arch")


def _defined_in_allowed(module_name: str, rule: ImportRule) -> bool:
    if _under_prefix(module_name, rule.prefixes):
        return True
    module = sys.modules.get(module_name)
    spec = getattr(module, "__spec__", None)
    top = module_name.partition(".")[0]
    if spec is None or top in sys.stdlib_module_names or top == _OWN_PACKAGE:
        return False
    try:
        _check_locations(spec, rule, "", module_name)
    except CandidateError:
        return False
    return True


def _under_prefix(module_name: str, prefixes: Iterable[str]) -> bool:
    return any(module_name == p or module_name.startswith(p + ".") for p in prefixes if p)


def _installed(path: Path) -> bool:
    """True for files of the interpreter, its standard library or any site-packages (a venv inside the tree too)."""
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        return True
    roots = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, *sysconfig.get_paths().values()}
    with contextlib.suppress(AttributeError):
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    return any(root and path.is_relative_to(Path(root).resolve()) for root in roots)
