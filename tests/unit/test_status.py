"""StatusBoard (readiness, liveness, secret-free /status) and EndpointServer over a real socket."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import ConfigError
from connector.observe.metrics import Metrics
from connector.observe.status import EndpointServer, StatusBoard, _Handler, redact


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ready_board(clock: FakeClock | None = None) -> StatusBoard:
    board = StatusBoard(["a", "b"], clock=clock or FakeClock(), health_timeout=30.0)
    board.set_kafka_reachable(True)
    board.update("a", state="polling")
    board.update("b", state="polling")
    return board


def test_a_new_board_is_not_ready() -> None:
    board = StatusBoard(["a"], clock=FakeClock())
    ready, reason = board.readiness()
    assert not ready
    assert reason["kafka"]["reachable"] is False
    assert reason["accounts_not_ready"] == {"a": "starting"}


def test_ready_when_kafka_reachable_and_every_owned_account_polls() -> None:
    ready, reason = ready_board().readiness()
    assert ready
    assert reason == {
        "ready": True,
        "kafka": {"reachable": True, "reason": None},
        "accounts_not_ready": {},
    }


def test_unreachable_kafka_makes_the_instance_not_ready() -> None:
    board = ready_board()
    board.set_kafka_reachable(False, "broker localhost:9092 down")
    ready, reason = board.readiness()
    assert not ready
    assert reason["kafka"] == {"reachable": False, "reason": "broker localhost:9092 down"}


@pytest.mark.parametrize(
    ("fields", "ready"),
    [
        ({"state": "polling"}, True),
        ({"state": "backoff", "attempt": 4}, True),
        ({"state": "backoff", "attempt": 5}, False),
        ({"state": "starting"}, False),
        ({"state": "recovering"}, False),
        ({"state": "auth_paused"}, False),
        ({"state": "tls_paused"}, False),
        # Paused fetching is not ready whatever the state says.
        ({"state": "polling", "paused": "disk_full"}, False),
        ({"state": "polling", "paused": "tls"}, False),
        ({"state": "spool_full"}, False),
        ({"state": "spool_error"}, False),
        ({"state": "failed"}, False),
        ({"state": "stopped"}, False),
        # An account this instance does not own says nothing about its readiness.
        ({"state": "not_owned", "owned": False}, True),
        ({"state": "failed", "owned": False}, True),
    ],
)
def test_readiness_by_account_state(fields: dict, ready: bool) -> None:
    board = ready_board()
    board.update("b", **fields)
    is_ready, reason = board.readiness()
    assert is_ready is ready
    assert ("b" in reason["accounts_not_ready"]) is not ready


def test_one_account_losing_kafka_makes_the_instance_not_ready() -> None:
    board = ready_board()
    board.set_kafka_reachable(False, "Local: All broker connections are down", account="b")
    ready, reason = board.readiness()
    assert not ready
    assert reason["kafka"] == {
        "reachable": False,
        "reason": "account b: Local: All broker connections are down",
    }
    assert board.snapshot()["accounts"]["b"]["kafka_reachable"] is False
    board.set_kafka_reachable(True, account="b")
    assert board.readiness()[0]
    assert board.snapshot()["accounts"]["b"]["kafka_error"] is None


def test_an_account_not_owned_here_says_nothing_about_kafka() -> None:
    board = ready_board()
    board.update("b", owned=False, state="not_owned")
    board.set_kafka_reachable(False, "down", account="b")
    assert board.readiness()[0]


def test_process_readiness_is_the_loop_and_startup_not_the_accounts() -> None:
    clock = FakeClock()
    board = ready_board(clock)
    assert board.process_readiness()[1] == {
        "ready": False,
        "scope": "process",
        "alive": True,
        "started": False,
        "every_owned_account_failed": False,
    }
    board.heartbeat()
    board.update("a", state="auth_paused")
    board.set_kafka_reachable(False, "down")
    assert board.process_readiness()[0]  # a bad token or Kafka do not make the pod unready
    board.update("b", state="failed")
    assert board.process_readiness()[0]
    board.update("a", state="failed")
    ready, reason = board.process_readiness()
    assert (ready, reason["every_owned_account_failed"]) == (False, True)
    board.update("a", state="polling")
    clock.now += 31  # the main loop stalled
    assert board.process_readiness()[1]["alive"] is False


def test_long_backoff_reason_names_the_attempts() -> None:
    board = ready_board()
    board.update("a", state="backoff", attempt=9)
    assert board.readiness()[1]["accounts_not_ready"] == {
        "a": "backoff after 9 consecutive failed attempts"
    }


def test_alive_until_the_heartbeat_is_older_than_the_timeout() -> None:
    clock = FakeClock()
    board = ready_board(clock)
    clock.now += 30.0
    assert board.alive()
    clock.now += 0.1
    assert not board.alive()
    board.heartbeat()
    assert board.alive()


def test_update_rejects_unknown_fields_and_states() -> None:
    board = ready_board()
    with pytest.raises(ValueError, match="fields"):
        board.update("a", token="x")
    with pytest.raises(ValueError, match="state"):
        board.update("a", state="sleeping")


def test_snapshot_has_every_account_field() -> None:
    clock = FakeClock()
    board = ready_board(clock)
    board.update(
        "a",
        last_success=990.0,
        last_error="HTTP 503",
        spool_pending=7,
        spool_pending_entries=2,
        spool_bytes=4096,
        spool_capacity_bytes=1 << 20,
        oldest_uncommitted_at=995.0,
        committed_sequence=41,
        next_poll_in=2.5,
    )
    clock.now += 5
    snap = json.loads(json.dumps(board.snapshot()))
    assert snap["accounts"]["a"] == {
        "state": "polling",
        "owned": True,
        "last_success": 990.0,
        "last_error": "HTTP 503",
        "spool_pending": 7,
        "spool_pending_entries": 2,
        "spool_bytes": 4096,
        "spool_capacity_bytes": 1 << 20,
        "oldest_uncommitted_at": 995.0,
        "oldest_uncommitted_age_s": 10.0,
        "paused": None,
        "kafka_reachable": None,
        "kafka_error": None,
        "committed_sequence": 41,
        "attempt": 0,
        "next_poll_in": 2.5,
    }
    assert snap["instance"]["uptime_s"] == 5
    assert snap["kafka"]["reachable"] is True


SECRET = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/-_.=",
    min_size=6,
    max_size=40,
).map(lambda s: "Qx7" + s)  # a prefix no other part of the document contains
TEMPLATES = (
    "login failed: Finovy-Access-Token: {s} was rejected",
    'platform said {{"result": 401, "token": "{s}"}}',
    "request to https://user:{s}@client.example/get-rpt failed",
    "Authorization: Bearer {s}",
    "POST /login secret={s}&uuid=u1",
    "SASL password = {s} refused",
)


@given(secret=SECRET, template=st.sampled_from(TEMPLATES))
def test_status_never_shows_a_credential(secret: str, template: str) -> None:
    board = ready_board()
    board.update("a", last_error=template.format(s=secret))
    board.set_kafka_reachable(False, template.format(s=secret))
    body = json.dumps(board.snapshot()) + json.dumps(board.readiness()[1])
    assert secret not in body
    assert "***" in body


def test_redact_keeps_ordinary_errors_and_bounds_their_length() -> None:
    assert redact("HTTP 503 from client.example after 2.0s") == (
        "HTTP 503 from client.example after 2.0s"
    )
    long = redact("x" * 10_000)
    assert len(long) == 500
    assert long.endswith("...")


# --- EndpointServer over a real socket ---------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def served(clock: FakeClock) -> Iterator[tuple[httpx.Client, StatusBoard, Metrics]]:
    metrics = Metrics(accounts=["a", "b"])
    board = StatusBoard(["a", "b"], clock=clock, health_timeout=30.0)
    server = EndpointServer("127.0.0.1:0", metrics, board)
    host, port = server.start()
    assert port > 0
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=5.0) as client:
        yield client, board, metrics
    server.stop()


def test_metrics_endpoint_serves_the_registry(served, capfd) -> None:
    client, _, metrics = served
    metrics.poll("a", "ok", 0.1, 12)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'rpt_reports_fetched_total{account="a"} 12.0' in response.text
    # Scrapes do not write an access log.
    assert capfd.readouterr().err == ""


def test_metrics_endpoint_speaks_openmetrics_when_asked(served) -> None:
    client, _, _ = served
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_metrics_endpoint_gzips_when_the_scraper_accepts_it(served) -> None:
    client, _, metrics = served
    metrics.poll("a", "ok", 0.1, 12)
    url = client.base_url
    connection = http.client.HTTPConnection(url.host, url.port, timeout=5)
    connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    response = connection.getresponse()
    wire = response.read()  # http.client does not decode: these are the bytes sent
    connection.close()
    assert response.getheader("Content-Encoding") == "gzip"
    assert int(response.getheader("Content-Length")) == len(wire)
    text = gzip.decompress(wire)
    assert b'rpt_reports_fetched_total{account="a"} 12.0' in text
    assert len(wire) < len(text)
    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


def test_answers_are_not_held_back_by_nagles_algorithm(served, monkeypatch) -> None:
    """Headers and body are two writes: with Nagle's algorithm on, each answer on a kept-alive
    connection (as scrapers and probes use) waited ~40 ms for the client's delayed ACK
    (bench/scrape.py measures it). Checked on the server's own socket, not by a stopwatch."""
    seen: list[int] = []
    handle = _Handler.handle

    def recording(self: _Handler) -> None:
        seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        handle(self)

    monkeypatch.setattr(_Handler, "handle", recording)
    client, _, _ = served
    with httpx.Client(base_url=client.base_url, timeout=5.0) as fresh:  # a new connection
        for path in ["/healthz", "/status", "/metrics"]:
            assert fresh.get(path).status_code == 200
    assert seen and all(seen), seen


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/status", "/nope"])
def test_head_answers_like_get_without_a_body(served, path: str) -> None:
    client, _, _ = served
    head, get = client.head(path), client.get(path)
    assert head.status_code == get.status_code
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.content == b""
    # Same connection, next request: the empty HEAD body did not desynchronise it.
    assert client.get("/healthz").status_code == 200


def test_readyz_scope_process_ignores_account_health(served) -> None:
    client, board, _ = served
    assert client.get("/readyz?scope=process").status_code == 503  # not started yet
    board.heartbeat()
    board.update("a", state="auth_paused")
    response = client.get("/readyz?scope=process")
    assert (response.status_code, response.json()["scope"]) == (200, "process")
    assert client.get("/readyz").status_code == 503
    assert client.get("/readyz?scope=connector").status_code == 503
    bad = client.get("/readyz?scope=everything")
    assert bad.status_code == 400
    assert "scope=process" in bad.text


def test_healthz_follows_the_heartbeat(served, clock: FakeClock) -> None:
    client, board, _ = served
    assert (client.get("/healthz").status_code, client.get("/healthz").text) == (200, "ok\n")
    clock.now += 31
    assert client.get("/healthz").status_code == 503
    board.heartbeat()
    assert client.get("/healthz").status_code == 200


def test_readyz_is_503_with_the_reason_until_ready(served) -> None:
    client, board, _ = served
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["accounts_not_ready"] == {"a": "starting", "b": "starting"}
    board.set_kafka_reachable(True)
    board.update("a", state="polling")
    board.update("b", state="backoff", attempt=1)
    response = client.get("/readyz")
    assert (response.status_code, response.json()["ready"]) == (200, True)


def test_status_endpoint_is_the_snapshot(served) -> None:
    client, board, _ = served
    board.update("b", state="auth_paused", last_error="token=abcdef123 rejected", owned=True)
    response = client.get("/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["accounts"]["b"]["state"] == "auth_paused"
    assert document["accounts"]["b"]["last_error"] == "token=*** rejected"
    assert "abcdef123" not in response.text


@pytest.mark.parametrize("path", ["/", "/metricsx", "/status/a", "/favicon.ico"])
def test_unknown_paths_are_404(served, path: str) -> None:
    client, _, _ = served
    assert client.get(path).status_code == 404


def test_query_strings_do_not_change_the_route(served) -> None:
    client, _, _ = served
    assert client.get("/healthz?verbose=1").status_code == 200


def test_a_taken_port_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = EndpointServer(f"127.0.0.1:{port}", Metrics(), StatusBoard(["a"]))
        with pytest.raises(ConfigError, match=f"metrics.listen 127.0.0.1:{port}"):
            server.start()


def test_stop_frees_the_port() -> None:
    server = EndpointServer("127.0.0.1:0", Metrics(), StatusBoard(["a"]))
    _, port = server.start()
    server.stop()
    again = EndpointServer(f"127.0.0.1:{port}", Metrics(), StatusBoard(["a"]))
    again.start()
    again.stop()
