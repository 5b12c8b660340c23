"""`rpt-connector replay archive|dlq`: records derived again, exactly once, from Kafka.

`archived` replays the raw archive, `dlq` the dead letters, both through `loop` (a transactional
consume-transform-produce); `cli` is the command. Sits beside the service, above `kafka`; only
`connector.cli` imports it.
"""
