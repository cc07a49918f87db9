"""scripts/mutate.py stays applicable: every mutation's fragment is in its file once, its tests exist."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import REPO


def load_mutate() -> ModuleType:
    """scripts/mutate.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("mutate_script", REPO / "scripts" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


MUTATIONS = load_mutate().MUTATIONS


def test_mutation_ids_are_distinct() -> None:
    ids = [mutation.id for mutation in MUTATIONS]
    assert len(ids) > 50
    assert sorted({i for i in ids if ids.count(i) > 1}) == []


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.id)
def test_every_mutation_finds_its_fragment_once(mutation: Any) -> None:
    # A refactor that moves the code makes the fragment vanish: the mutation would be reported stale and the
    # fault it stands for would go unchecked; twice, and the script could not say which one it mutates.
    text = (REPO / mutation.path).read_text(encoding="utf-8")
    assert text.count(mutation.old) == 1, f"{mutation.old!r} occurs {text.count(mutation.old)} times in {mutation.path}"
    assert mutation.old != mutation.new


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.id)
def test_every_mutation_names_tests_that_exist(mutation: Any) -> None:
    # pytest given a test id that no longer exists collects nothing and passes: the mutation would "survive".
    for test in mutation.tests:
        file, _, name = test.partition("::")
        assert (REPO / file).is_file(), test
        if name:  # a function, perhaps with a case id: both must be in that file
            function, _, case = name.partition("[")
            text = (REPO / file).read_text(encoding="utf-8")
            assert re.search(rf"^def {re.escape(function)}\(", text, re.M), test
            assert not case or f'"{case.rstrip("]")}"' in text, test
