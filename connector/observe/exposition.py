"""The /metrics body, written as prometheus_client writes it, but without its per-series cost.

prometheus_client's encoders build a Sample and a label dict for every series on every scrape
and format each line anew: some 5 to 10 µs a series, over a second for the 143,000 series of
1,000 accounts. The text of a series but its value never changes, so here each family's header
and each series' line prefix (`name{labels} `) are made once, by prometheus_client's own encoder
for the format the scraper asked for (so the text is exactly its text), and a scrape only
formats the values that changed (`floatToGoString`, as the encoders do). The first scrape in a
format makes every line's text, and costs what prometheus_client's encoder does.

A collector takes part by having `expose(fmt, out)`; any other collector of the registry (the
process collector, `rpt_build_info`) is encoded as a whole by prometheus_client each time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Encoder = Callable[[Collector], bytes]


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


class Format:
    """One exposition format (Prometheus text, OpenMetrics) as its encoder writes it."""

    def __init__(self, encoder: Encoder, content_type: str) -> None:
        self.content_type = content_type
        self._encoder = encoder
        self.trailer = self._encode([])  # OpenMetrics ends with "# EOF"

    def _encode(self, families: Iterable[Metric]) -> str:
        return self._encoder(_Families(families)).decode("utf-8")

    def render(self, families: Iterable[Metric]) -> str:
        """`families` in this format, without the trailer."""
        text = self._encode(families)
        return text[: len(text) - len(self.trailer)]


_FORMATS: dict[str, Format] = {}
_FORMATS_LOCK = threading.Lock()


def negotiate(accept: str) -> Format:
    """The format prometheus_client would answer an `Accept` header with (one per content type)."""
    encoder, content_type = choose_encoder(accept)
    with _FORMATS_LOCK:
        fmt = _FORMATS.get(content_type)
        if fmt is None:
            fmt = _FORMATS[content_type] = Format(encoder, content_type)
        return fmt


def go_float(value: float) -> str:
    """`floatToGoString(value)`, the encoders' number format, its common case first: a finite
    number with 1 to 6 digits before the point is Python's repr (anything else: the original)."""
    text = repr(float(value))
    dot = text.find(".")
    if 0 < dot < 7:
        return text
    return floatToGoString(value)


class SeriesText:
    """One family's header and its series' line prefixes in one format, each made once.

    `empty()` makes the family without samples; `add(family, key, values)` adds the samples of
    series `key` with those values, in the order `values()` of that series gives them. The lines
    of the last scrape are kept too, and a value equal to the one before keeps its line (most do
    between two scrapes: the buckets no report fell in, an idle account; 0.0 then -0.0 would
    keep "0.0", and nothing here sets -0.0). Whoever writes lines holds `lock` meanwhile (two
    scrapes at once take turns per family): a scrape allocates only the lines that changed.
    """

    def __init__(
        self,
        fmt: Format,
        empty: Callable[[], Metric],
        add: Callable[[Metric, tuple[str, ...], Sequence[float]], None],
    ) -> None:
        self._fmt = fmt
        self._empty = empty
        self._add = add
        self.header = fmt.render([empty()])
        self.lock = threading.Lock()
        # A line is its prefix and its value: the prefix is cut from the line when it changes.
        self._value: dict[tuple[str, ...], float] = {}  # a series of one sample: its value
        self._line: dict[tuple[str, ...], str] = {}  # and its line
        self._many: dict[tuple[str, ...], tuple[tuple, list[str]]] = {}  # (values, lines)

    def line(self, key: tuple[str, ...], value: float, out: list[str]) -> None:
        """Append the line of series `key`, a series of one sample, to `out` (`lock` held)."""
        line = self._line.get(key)
        if line is None:
            line = self._line[key] = self._make(key, 1)[0] + go_float(value) + "\n"
            self._value[key] = value
        elif self._value[key] != value:  # NaN: every time
            line = self._line[key] = _prefix(line) + go_float(value) + "\n"
            self._value[key] = value
        out.append(line)

    def lines(self, key: tuple[str, ...], values: tuple[float, ...], out: list[str]) -> None:
        """Append the lines of series `key` to `out` (`lock` held)."""
        kept = self._many.get(key)
        if kept is None or len(kept[1]) != len(values):
            prefixes = self._make(key, len(values))
            lines = [p + go_float(v) + "\n" for p, v in zip(prefixes, values, strict=True)]
            self._many[key] = (values, lines)
        else:
            last, lines = kept
            if values != last:
                for index, value in enumerate(values):
                    if value != last[index]:
                        lines[index] = _prefix(lines[index]) + go_float(value) + "\n"
                self._many[key] = (values, lines)
        out.extend(lines)

    def _make(self, key: tuple[str, ...], count: int) -> tuple[str, ...]:
        family = self._empty()
        self._add(family, key, (0.0,) * count)
        text = self._fmt.render([family])
        lines = text[len(self.header) :].split("\n")[:-1]
        if not text.startswith(self.header) or len(lines) != count:
            raise RuntimeError(f"unexpected exposition of {family.name} {key}: {text!r}")
        prefixes = []
        for line in lines:
            prefix, _, value = line.rpartition(" ")
            if value != "0.0":
                raise RuntimeError(f"unexpected sample line of {family.name}: {line!r}")
            prefixes.append(prefix + " ")
        return tuple(prefixes)


def _prefix(line: str) -> str:
    """`name{labels} ` of a sample line (a label value may hold spaces; the value holds none)."""
    return line[: line.rindex(" ") + 1]


class ExposedRegistry(CollectorRegistry):
    """A CollectorRegistry that also keeps its collectors in order, for `encode`."""

    def __init__(self) -> None:
        super().__init__()
        self._order_lock = threading.Lock()
        self._in_order: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        with self._order_lock:
            self._in_order.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        with self._order_lock:
            self._in_order.remove(collector)

    def collectors(self) -> list[Collector]:
        with self._order_lock:
            return list(self._in_order)


def encode(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The /metrics body for `accept` and its content type: the same bytes as
    prometheus_client's encoder for that header, collector by collector in registry order."""
    fmt = negotiate(accept)
    if not isinstance(registry, ExposedRegistry) or registry.get_target_info():
        encoder, _ = choose_encoder(accept)
        return encoder(registry), fmt.content_type
    out: list[str] = []
    for collector in registry.collectors():
        expose = getattr(collector, "expose", None)
        if expose is not None:
            expose(fmt, out)
        else:
            out.append(fmt.render(collector.collect()))
    out.append(fmt.trailer)
    return "".join(out).encode("utf-8"), fmt.content_type
