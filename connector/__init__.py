"""rpt-connector: an exactly-once Kafka source connector for an SMS platform's get-rpt API.

Packages by layer, top to bottom (import-linter contracts in pyproject.toml keep it so): `cli`;
`service`, `checks`, `replay`; `pipeline`; `session`, `fetcher`; `platform`, `spool`, `kafka`
(independent of each other); `observe`; `codec`; `config`; `errors`, `retry`. `simulator` is a
stand-in platform that only the `simulate` command imports.
"""

__version__ = "0.1.0"
