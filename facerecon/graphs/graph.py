"""A dataflow graph of constants and ops, evaluated with TensorFlow ops so gradients reach
its inputs: what every graph reader (TF.js, OpenVINO IR) builds from its file format.

A reader gives the nodes, the decoded constants and, in a subclass of :class:`Graph`, what
each op computes (:meth:`Graph.apply`) and which ops it supports. :meth:`Graph.run`
evaluates only the nodes the requested outputs need; :class:`GraphLayer` wraps a stretch of
the graph as a Keras layer, so a functional ``keras.Model`` can expose intermediate nodes.
Constants stay constants: nothing here is trainable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from facerecon.core.errors import FaceReconError


@dataclass(frozen=True)
class Node:
    """One op of a graph: it reads output ``ports[i]`` (0 when ``ports`` is empty) of node
    ``inputs[i]``; ``attr`` holds the op's attributes as the format stores them."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: Mapping[str, Any]
    ports: tuple[int, ...] = ()

    def port(self, i: int) -> int:
        """The output of ``inputs[i]`` that this node reads."""
        return self.ports[i] if self.ports else 0


@dataclass
class Graph(ABC):
    """Nodes by name and constants by node name, from the file ``source``."""

    source: Path
    nodes: dict[str, Node]
    weights: dict[str, np.ndarray]
    _constants: dict[str, tf.Tensor] = field(default_factory=dict, repr=False)

    #: the format, as error messages name it
    reader: ClassVar[str] = "graph"
    #: what the format calls a node, as error messages name it
    noun: ClassVar[str] = "node"
    #: the ops of the graph's inputs and of its constants
    feed_op: ClassVar[str] = "Placeholder"
    const_op: ClassVar[str] = "Const"
    #: every op :meth:`apply` implements, inputs and constants included
    supported: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def apply(self, node: Node, args: list[tf.Tensor]) -> tf.Tensor | tuple[tf.Tensor, ...]:
        """The value of ``node`` (a tuple for an op with several outputs) from its inputs'."""

    def check_node(self, node: Node) -> None:  # noqa: B027 (optional: most ops need no check)
        """Fail with one line when ``node``'s attributes ask for what is not supported; the
        default accepts every node."""

    def order(self, outputs: Sequence[str], feeds: Sequence[str] = ()) -> list[str]:
        """The nodes needed for ``outputs`` given ``feeds``, inputs before their users."""
        for name in (*outputs, *feeds):
            if name not in self.nodes:
                raise FaceReconError(f"{self.source}: the graph has no {self.noun} {name!r}")
        done: set[str] = set(feeds)
        path: dict[str, None] = {}  # expanded, not yet done: the nodes down to the current one
        ordered: list[str] = []
        # Iterative depth-first search: deep graphs would overflow Python's recursion limit.
        stack: list[tuple[str, bool]] = [(name, False) for name in reversed(outputs)]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            if expanded:
                path.pop(name)
                done.add(name)
                ordered.append(name)
                continue
            if name in path:
                loop = [*list(path)[list(path).index(name) :], name]
                raise FaceReconError(
                    f"{self.source}: the graph has a cycle: {' -> '.join(map(repr, loop))}"
                )
            path[name] = None
            stack.append((name, True))
            stack.extend((i, False) for i in reversed(self.nodes[name].inputs) if i not in done)
        return ordered

    def check(self, names: Sequence[str]) -> None:
        """Fail with one line on the first node whose op (or attribute) is not supported."""
        for name in names:
            node = self.nodes[name]
            if node.op not in self.supported:
                raise FaceReconError(
                    f"{self.source}: {self.noun} {name!r} uses op {node.op!r}, which "
                    f"facerecon's {self.reader} reader does not support "
                    f"(supported: {', '.join(sorted(self.supported))})"
                )
            self.check_node(node)
            for source in node.inputs:
                if source not in self.nodes:
                    raise FaceReconError(
                        f"{self.source}: {self.noun} {name!r} reads {source!r}, which is not "
                        "in the graph"
                    )
            if node.op == self.const_op and name not in self.weights:
                raise FaceReconError(
                    f"{self.source}: constant {name!r} has no entry in the weights manifest"
                )

    def constant(self, name: str) -> tf.Tensor:
        """The weight ``name`` as an eager constant, made once and shared by every trace."""
        if name not in self._constants:
            # Eager even when first asked for inside a tf.function or a Keras trace.
            with tf.init_scope():
                self._constants[name] = tf.constant(self.weights[name])
        return self._constants[name]

    def run(self, feeds: Mapping[str, tf.Tensor], outputs: Sequence[str]) -> list[tf.Tensor]:
        """Evaluate ``outputs`` (their first outputs) with ``feeds`` standing in for the
        nodes they name."""
        order = self.order(outputs, tuple(feeds))
        self.check(order)
        values: dict[str, tuple[tf.Tensor, ...]] = {k: (v,) for k, v in feeds.items()}
        for name in order:
            node = self.nodes[name]
            if node.op == self.feed_op:
                raise FaceReconError(
                    f"{self.source}: computing {', '.join(outputs)} needs input {name!r}, "
                    "which is not fed"
                )
            if node.op == self.const_op:
                values[name] = (self.constant(name),)
                continue
            args = [values[source][node.port(i)] for i, source in enumerate(node.inputs)]
            value = self.apply(node, args)
            values[name] = value if isinstance(value, tuple) else (value,)
        return [values[name][0] for name in outputs]

    def split_feed(self, name: str, readers: Sequence[str]) -> list[str]:
        """Give each node of ``readers`` its own input in place of node ``name``: one new
        input node per reader, named ``name/<i>``, returned in the order of ``readers``."""
        feeds = []
        for i, reader in enumerate(readers):
            node = self.nodes[reader]
            if name not in node.inputs:
                raise FaceReconError(
                    f"{self.source}: {self.noun} {reader!r} does not read {name!r}"
                )
            feed = f"{name}/{i}"
            self.nodes[feed] = Node(feed, self.feed_op, (), {})
            inputs = tuple(feed if source == name else source for source in node.inputs)
            self.nodes[reader] = replace(node, inputs=inputs)
            feeds.append(feed)
        return feeds

    def check_stretch(self, feed: str, output: str) -> None:
        """Fail unless ``output`` can be computed from ``feed`` alone, with supported ops."""
        order = self.order([output], [feed])
        self.check(order)
        unfed = [name for name in order if self.nodes[name].op == self.feed_op]
        if unfed:
            raise FaceReconError(
                f"{self.source}: {output!r} depends on input {unfed[0]!r}, not only on {feed!r}"
            )


def fold_static(
    op: Callable[[Node, list[tf.Tensor]], Any], node: Node, args: list[tf.Tensor]
) -> Any:
    """``op(node, args)``; inside a trace, when every input is static (constants, static
    shapes), computed once, eagerly, so the trace keeps static shapes (a channels-first
    format's shape arithmetic). Eager calls run as they are: there every value looks
    static, and folding would cut the gradient tape."""
    if tf.executing_eagerly():
        return op(node, args)
    static = [tf.get_static_value(a) for a in args]
    if all(v is not None for v in static):
        with tf.init_scope():
            return op(node, [tf.constant(v) for v in static])
    return op(node, args)


class GraphLayer(keras.layers.Layer):
    """The stretch of a graph from node ``feed`` (the layer's input) to node ``output``.

    Chaining layers whose feed is the previous output makes each cut a named Keras layer; a
    stretch that needs a node before its feed (a skip connection across a cut) fails to build.
    """

    # Keras reads __init__'s argument spec, which mutmut's wrapper would hide: the checks live
    # in Graph.check_stretch, and this stays as written.
    def __init__(
        self, graph: Graph, feed: str, output: str, **kwargs: Any
    ) -> None:  # pragma: no mutate block
        super().__init__(trainable=False, **kwargs)
        self.graph, self.feed, self.output_node = graph, feed, output
        graph.check_stretch(feed, output)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        (out,) = self.graph.run({self.feed: inputs}, [self.output_node])
        return out


def chain(
    graph: Graph, x: keras.KerasTensor, feed: str, stops: Sequence[tuple[str, str]]
) -> keras.KerasTensor:
    """Run ``x`` (standing in for node ``feed``) through ``graph``: one :class:`GraphLayer`
    per ``(layer name, node)`` stop, in order, so every stop is a named Keras layer."""
    for layer_name, node in stops:
        x = GraphLayer(graph, feed, node, name=layer_name)(x)
        feed = node
    return x
