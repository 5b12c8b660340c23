"""What a status report is, from the platform's bytes to Avro: the model every layer shares.

The get-rpt body parser (strict, then salvage), `desc` decoding, normalization into records, the
Avro schema and wire formats, and the native (Rust) hot path that does all of it in one call.
Imports only `config` and `errors` below it; anything above may import it.
"""
