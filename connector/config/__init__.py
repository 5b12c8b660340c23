"""The configuration: one TOML file plus `RPT_*` overrides, validated once at start.

`settings` is the pydantic model and loader (`units`: durations and sizes as written),
`describe` turns a validation error into one line naming the key, `secrets` reads tokens and
passwords from the environment or files, `views` is each account with its defaults applied.
Imports only `connector.errors`; every layer reads it.
"""
