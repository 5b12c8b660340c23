"""prometheus_client's Counter, Gauge and Histogram, with a `labels()` that is a dict lookup.

`labels()` of prometheus_client validates its arguments, converts each to str and takes a
lock on every call: a few µs, and the fetch and publish loops make some twenty such calls per
get-rpt answer. Here the child of a label-value tuple is looked up once, then kept (children
are never removed in this connector; `remove()` and `clear()` still forget them).
"""

from __future__ import annotations

import prometheus_client


class _KeptChildren:
    def labels(self, *values: object, **by_name: object):
        if by_name or not values:
            return super().labels(*values, **by_name)
        kept = self.__dict__.get("_kept_children")
        if kept is None:
            kept = self.__dict__["_kept_children"] = {}
        child = kept.get(values)
        if child is None:
            child = kept[values] = super().labels(*values)
        return child

    def remove(self, *values: object) -> None:
        self.__dict__.pop("_kept_children", None)
        super().remove(*values)

    def clear(self) -> None:
        self.__dict__.pop("_kept_children", None)
        super().clear()


class Counter(_KeptChildren, prometheus_client.Counter):
    pass


class Gauge(_KeptChildren, prometheus_client.Gauge):
    pass


class Histogram(_KeptChildren, prometheus_client.Histogram):
    pass
