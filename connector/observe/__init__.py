"""Observing the connector: the observer interface, Prometheus metrics, /status, logs.

`observer` is the interface the pipeline calls (it imports none of its implementations);
`account` is the concrete observer feeding `metrics` and the `status` board from one call.
Imports only `codec`, `config` and `errors` below it; the parts above call it.
"""
