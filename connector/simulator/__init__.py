"""A stand-in SMS platform for tests, the demo and benchmarks: `rpt-connector simulate`.

`platform` keeps accounts, report queues and faults without HTTP; `server` serves get-rpt over
a real socket. Imports nothing of the connector (so it stays an honest stand-in), and nothing
shipped imports it except the `simulate` command in `connector.cli`.
"""
