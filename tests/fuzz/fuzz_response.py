"""Coverage-guided fuzzing of a get-rpt body through parse → normalize → encode (atheris).

The contract, for any bytes: `parse_response` returns a list or raises a `PlatformError`;
`normalize_batch` never raises and accounts for every report; every record encodes. Any other
exception is a crash, and atheris saves the input as `crash-<sha1>`.

Not collected by pytest (the name has no `test_` prefix) and not run in CI by default; atheris
is not a project dependency. To run it:

    .venv/bin/pip install atheris
    mkdir -p /tmp/rpt-corpus
    .venv/bin/python tests/fuzz/fuzz_response.py /tmp/rpt-corpus -max_total_time=300
    .venv/bin/python tests/fuzz/fuzz_response.py crash-<sha1>   # replay one input

Any libFuzzer flag works (`-max_len=65536`, `-jobs=2`, `-dict=...`).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from connector.codec.avro import single_object_encoder
    from connector.codec.report import Normalizer
    from connector.errors import PlatformError
    from connector.platform.client import parse_response

_NORMALIZER = Normalizer("fuzz")
_ENCODER = single_object_encoder()


def one_input(raw: bytes) -> None:
    try:
        reports = parse_response(raw)
    except PlatformError:
        return
    batch = _NORMALIZER.normalize_batch(reports, 0)
    if len(batch.records) + len(batch.rejected) != len(reports):
        raise AssertionError("a report was neither a record nor rejected")
    _ENCODER.encode_batch(batch.records)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
