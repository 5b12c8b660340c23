"""Shared test fixtures: get-rpt bodies, and the harness's simulator as a bare process."""

from __future__ import annotations

import subprocess
from pathlib import Path

from devharness import SimulatorProcess, stop_process

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


def start_simulator(*args: str) -> tuple[subprocess.Popen[str], str]:
    """`python -m connector simulate --port 0 ARGS` → (process, base_url from its first line)."""
    simulator = SimulatorProcess(list(args), capture_stderr=True).start()
    return simulator.process, simulator.base_url


def stop_simulator(process: subprocess.Popen[str], timeout: float = 10.0) -> int:
    """SIGTERM, wait, and return the exit code (killing it if it does not stop in time)."""
    return stop_process(process, timeout)
