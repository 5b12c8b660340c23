"""Counter, Gauge and Histogram families of labelled series: cheap to update and to expose.

prometheus_client's own classes validate and convert the label values and take a lock on every
`labels()` call (a few µs; the fetch and publish loops make some twenty such calls per get-rpt
answer), and at every scrape build a Sample and a label dict per series. Here a family keeps
each child by its label values, looked up once, then kept (children are never removed in this
connector; `remove()` and `clear()` still forget them); a child holds its values under its own
lock; `expose()` writes the series through connector.observe.exposition (each line's text made
once by prometheus_client's encoder). `collect()` yields prometheus_client metric families, so
`registry.get_sample_value()` and prometheus_client's encoders read the same series.

Counter and Histogram follow prometheus_client: a counter only goes up; a histogram counts a
value in the first bucket whose bound is >= it and always has a +Inf bucket (bounds here are
never negative, so its sum is always exposed). No `_created` series are exposed (the connector
disables them).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from itertools import accumulate
from typing import ClassVar, Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from connector.observe.exposition import Format, SeriesText


class CounterChild:
    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._lock:
            self._value += amount

    def values(self) -> tuple[float]:
        return (self._value,)


class GaugeChild:
    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1) -> None:
        self.inc(-amount)

    def values(self) -> tuple[float]:
        return (self._value,)


class HistogramChild:
    """Per-bucket (not cumulative) counts and the sum; `values()` gives the exposed samples."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._lock = threading.Lock()
        self._bounds = bounds
        self._counts = [0.0] * len(bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        with self._lock:
            self._counts[bisect_left(self._bounds, amount)] += 1
            self._sum += amount

    def observe_many(self, values: Mapping[float, int]) -> None:
        """Observe each value `count` times: one call per batch, O(distinct values)."""
        with self._lock:
            for value, count in values.items():
                self._counts[bisect_left(self._bounds, value)] += count
                self._sum += value * count

    def values(self) -> tuple[float, ...]:
        """The cumulative bucket counts, the count and the sum."""
        with self._lock:
            cumulative = tuple(accumulate(self._counts))
            total = self._sum
        return (*cumulative, cumulative[-1], total)


Child = TypeVar("Child", CounterChild, GaugeChild, HistogramChild)


class _Family(Collector, Generic[Child]):
    TYPE: ClassVar[str]
    ONE_VALUE: ClassVar[bool] = True  # a child's one sample is its `_value`

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], Child] = {}  # by the label values as exposed
        self._in_order: list[tuple[tuple[str, ...], Child]] = []  # its items, only ever added to
        self._kept: dict[tuple[object, ...], Child] = {}  # by the values labels() was given
        self._texts: dict[str, SeriesText] = {}  # by exposition content type
        if registry is not None:
            registry.register(self)

    def labels(self, *values: object, **by_name: object) -> Child:
        if by_name:
            if values or set(by_name) != set(self._labelnames):
                raise ValueError(f"{self._name} takes labels {self._labelnames}, got {by_name}")
            values = tuple(by_name[name] for name in self._labelnames)
        child = self._kept.get(values)
        if child is None:
            child = self._kept[values] = self._child(values)
        return child

    def _child(self, values: tuple[object, ...]) -> Child:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values!r}")
        key = tuple(str(value) for value in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new_child()
                self._in_order.append((key, child))
            return child

    def remove(self, *values: object) -> None:
        key = tuple(str(value) for value in values)
        with self._lock:
            self._children.pop(key, None)
            self._in_order = list(self._children.items())
            self._kept = {}

    def clear(self) -> None:
        with self._lock:
            self._children = {}
            self._in_order = []
            self._kept = {}
            self._texts = {}

    def _series(self) -> list[tuple[tuple[str, ...], Child]]:
        """The series (a list only appended to, or replaced: read it without a copy)."""
        return self._in_order

    def _new_child(self) -> Child:
        raise NotImplementedError

    def _empty(self) -> Metric:
        return Metric(self._name, self._documentation, self.TYPE)

    def _add(self, family: Metric, key: tuple[str, ...], values: Sequence[float]) -> None:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        yield self._empty()

    def collect(self) -> Iterator[Metric]:
        family = self._empty()
        for key, child in self._series():
            self._add(family, key, child.values())
        yield family

    def expose(self, fmt: Format, out: list[str]) -> None:
        """This family as `fmt` writes it (connector.observe.exposition)."""
        text = self._texts.get(fmt.content_type)
        if text is None:
            text = self._texts[fmt.content_type] = SeriesText(fmt, self._empty, self._add)
        out.append(text.header)
        with text.lock:
            if self.ONE_VALUE:
                for key, child in self._series():
                    text.line(key, child._value, out)  # type: ignore[union-attr]  # no tuple
            else:
                for key, child in self._series():
                    text.lines(key, child.values(), out)


class Counter(_Family[CounterChild]):
    TYPE = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], **kwargs) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, **kwargs)

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def _add(self, family: Metric, key: tuple[str, ...], values: Sequence[float]) -> None:
        labels = dict(zip(self._labelnames, key, strict=True))
        family.add_sample(f"{self._name}_total", labels, values[0])


class Gauge(_Family[GaugeChild]):
    TYPE = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def _add(self, family: Metric, key: tuple[str, ...], values: Sequence[float]) -> None:
        family.add_sample(self._name, dict(zip(self._labelnames, key, strict=True)), values[0])


class Histogram(_Family[HistogramChild]):
    TYPE = "histogram"
    ONE_VALUE = False

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if bounds and bounds[0] < 0:
            raise ValueError(f"{name}: a bucket bound below 0 ({bounds[0]})")
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = tuple(bounds)
        self._les = tuple(floatToGoString(b) for b in self._bounds)
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def _add(self, family: Metric, key: tuple[str, ...], values: Sequence[float]) -> None:
        labels = dict(zip(self._labelnames, key, strict=True))
        for le, value in zip(self._les, values, strict=False):
            family.add_sample(f"{self._name}_bucket", {**labels, "le": le}, value)
        family.add_sample(f"{self._name}_count", labels, values[-2])
        family.add_sample(f"{self._name}_sum", labels, values[-1])
