"""Shared test fixtures: get-rpt bodies and a simulator started as its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GET_RPT_PATH = "/client-sms/v2/sms/get-rpt"
LOGIN_PATH = "/client-sms/user/login"

# The seed's example answer, byte for byte in substance.
SEED_RESPONSE = b"""{ "result":0,
  "desc":"%e6%88%90%e5%8a%9f",
  "rpts": [
    { "msgid":9223372045854775808,
      "custid":"b3d0a2783d31b21b8573",
      "pknum":1,
      "pktotal":2,
      "mobile":"138xxxxxxxx",
      "countrycode":86,
      "spno":"1000457890006",
      "exno":"0006",
      "stime":"2016-08-04 17:38:55",
      "rtime":"2016-08-04 17:38:59",
      "status":0,
      "errcode":"DELIVRD",
      "errdesc":"success",
      "exdata":"exdata0002"
    }
  ]
}"""


def start_simulator(*args: str, timeout: float = 30.0) -> tuple[subprocess.Popen[str], str]:
    """`python -m connector simulate --port 0 ARGS` → (process, base_url from its first line)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "simulate", "--port", "0", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    prefix = "listening on "
    if not line.startswith(prefix):
        stop_simulator(process, timeout=timeout)
        raise RuntimeError(f"simulator did not start: {line!r} {process.stderr.read()!r}")
    return process, line.removeprefix(prefix)


def stop_simulator(process: subprocess.Popen[str], timeout: float = 10.0) -> int:
    """SIGTERM, wait, and return the exit code (killing it if it does not stop in time)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return process.returncode
