"""The randomised copies' shared trunk: a model's graph split at the entry of its top block.

A randomised copy re-initialises the target layer's top block and the head and shares every weight below
them (gate.engine.sanity), so below the block it computes exactly what the model computed. The explained
forward therefore keeps the activation entering the block (:func:`kept_entry`, one tensor per batch, on the
device) and each copy runs only its tail from there: the block, the rest of the target layer and the head.

The graph is split with torch.fx: the model is traced once, the block a leaf, and the tail is every node
that depends on the block's input, with the constants they read. A model whose graph does not split keeps
the full forward, and :class:`NoSplit` says why: its forward does not trace (data-dependent control flow),
the block or the target layer runs more than once, something computed below the block other than its input
reaches the tail (a skip over the block), or nothing lies below the block (its input is the model's).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, fx, nn

from gate.errors import reason

# The tail's stand-in for the target layer: an identity on the layer's output that explain() hooks.
MARKER = "sanity_target_layer"


class NoSplit(Exception):
    """The model's graph cannot be split at the block; the message says why (recorded in the environment)."""


@dataclass(frozen=True)
class Split:
    """A traced graph, the node entering the top block and the node of the target layer's output."""

    graph: fx.Graph
    entry: fx.Node
    target_output: fx.Node
    block: str  # qualified name of the block's first module: its input is the entry


class _Tracer(fx.Tracer):
    """fx tracing with the block as a leaf, recording each output of the target layer."""

    def __init__(self, block: nn.Module, target: nn.Module) -> None:
        super().__init__()
        self.block, self.target = block, target
        self.outputs: list[object] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return m is self.block or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = super().call_module(m, forward, args, kwargs)
        if m is self.target:
            self.outputs.append(out)
        return out


def split(model: nn.Module, block: str, target_layer: str) -> Split:
    """Trace ``model`` and find where its tail starts: the input of module ``block`` (inside ``target_layer``).

    Raises :class:`NoSplit` when the graph does not split there.
    """
    modules = dict(model.named_modules())
    tracer = _Tracer(modules[block], modules[target_layer])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fx warns about tracing details a gate's reader cannot act on
            graph = tracer.trace(model)
    except Exception as exc:  # any failure to trace is a reason to keep the full forward, never an error
        raise NoSplit(f"its forward does not trace with torch.fx ({reason(exc)})") from None
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == block]
    if len(calls) != 1 or len(tracer.outputs) != 1:
        raise NoSplit(f"{block} or {target_layer} runs {len(calls)} and {len(tracer.outputs)} times per forward")
    (call,) = calls
    (output,) = tracer.outputs
    if len(call.args) != 1 or call.kwargs or not isinstance(call.args[0], fx.Node):
        raise NoSplit(f"{block} is called with other than one tensor")
    entry = call.args[0]
    if entry.op == "placeholder":
        raise NoSplit(f"nothing runs below {block}: its input is the model's")
    if not isinstance(output, fx.Proxy):
        raise NoSplit(f"{target_layer} does not output one tensor")
    found = Split(graph=graph, entry=entry, target_output=output.node, block=block)
    _tail_graph(found)  # refuse now, not per copy
    return found


def tail(found: Split, model: nn.Module) -> fx.GraphModule:
    """The tail of ``model`` (the traced model or a copy with the same module names): entry → the model's output.

    The modules are ``model``'s own (their hooks fire); the target layer's output passes through ``MARKER``.
    """
    graph = _tail_graph(found)
    root: dict[str, Any] = {MARKER: nn.Identity()}
    for node in graph.nodes:
        if node.op == "call_module" and node.target != MARKER:
            root[node.target] = model.get_submodule(node.target)
        elif node.op == "get_attr":
            root[node.target] = _attribute(model, node.target)
    return fx.GraphModule(root, graph, class_name="SanityTail")


def _attribute(model: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(model.get_submodule(owner) if owner else model, name)


def _tail_graph(found: Split) -> fx.Graph:
    """A new graph of the nodes that depend on the entry (and the constants they read), entry its input."""
    from_input: set[fx.Node] = set()
    below: set[fx.Node] = {found.entry}
    for node in found.graph.nodes:
        inputs = node.all_input_nodes
        if node.op == "placeholder" or any(n in from_input for n in inputs):
            from_input.add(node)
        if any(n in below for n in inputs):
            below.add(node)
    if found.target_output not in below:
        raise NoSplit("the target layer's output does not depend on the block's input")
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {found.entry: graph.placeholder("entry")}
    constants: set[fx.Node] = set()
    for node in found.graph.nodes:
        if node in env or (node in from_input and node not in below and node.op != "output"):
            continue  # the trunk: computed once, by the explained forward
        missing = [n.name for n in node.all_input_nodes if n not in env]
        if missing:
            raise NoSplit(f"{', '.join(missing)} (computed below the block) reaches the layers above it")
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node not in below:
            constants.add(env[node])
        if node is found.target_output:
            env[node] = graph.call_module(MARKER, (env[node],))
    # Only the constants the tail does not read are dropped; every node above the block stays, as traced.
    graph.eliminate_dead_code(is_impure_node=lambda n: n not in constants)
    return graph


@dataclass
class Entry:
    """The activation entering the block in the last forward, and how often the block ran in it."""

    value: Tensor | None = None
    calls: int = 0

    def get(self) -> Tensor | None:
        """The saved activation when the block ran exactly once (as traced), else None: the full forward then."""
        return self.value if self.calls == 1 else None


@contextmanager
def kept_entry(model: nn.Module, block: str | None) -> Iterator[Entry]:
    """Within the block, keep the input of ``model``'s module ``block`` (None: keep nothing)."""
    entry = Entry()
    if block is None:
        yield entry
        return

    def keep(_module: nn.Module, args: tuple[Any, ...]) -> None:
        value = args[0] if args else None
        entry.value = value.detach() if isinstance(value, Tensor) else None
        entry.calls += 1

    handle = model.get_submodule(block).register_forward_pre_hook(keep)
    try:
        yield entry
    finally:
        handle.remove()
