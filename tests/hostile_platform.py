"""A hostile get-rpt platform on loopback: real sockets, scripted answers, an honest log.

Each answer in the script is handed out once, in order, to whichever get-rpt request comes
next (get-rpt is destructive: what was sent is gone from the platform). After the script, every
request gets an empty batch. The server logs what it handed out — per answer its kind, the
msgids in it and the body bytes it actually wrote — as the ground truth tests count against.
More accounts: `tokens` gives each further token a script of its own (`add` appends to one
while serving), so one account's platform can misbehave while another's does not.

Written on raw sockets (not http.server) so that it can misbehave at the byte level: drip a
body (or even the headers) one byte at a time, cut a body short and close, send more than the
client accepts.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

OK_DESC = "%e6%88%90%e5%8a%9f"  # 成功 (UTF-8), as in the seed
BUSY_GB2312 = "%cf%b5%cd%b3%c3%a6"  # 系统忙 (GB2312), as the seed says desc is encoded
AUTH_FAILED = "%e8%ba%ab%e4%bb%bd%e8%ae%a4%e8%af%81%e5%a4%b1%e8%b4%a5"  # 身份认证失败
BOM = b"\xef\xbb\xbf"
EMPTY = json.dumps({"result": 0, "desc": OK_DESC, "rpts": []}).encode()
FIRST_MSGID = 9223372045854775808  # above int64, as in the seed: must stay exact
_MSGID = re.compile(rb'"msgid"\s*:\s*"?(\d+)')


def msgids_in(data: bytes) -> list[str]:
    """Every complete `"msgid": N` in some bytes (a cut-off number counts as what it reads)."""
    return [m.decode() for m in _MSGID.findall(data)]


@dataclass
class Answer:
    """One scripted get-rpt answer."""

    kind: str
    body: bytes  # what the platform sends as the body (or starts to)
    reports: int = 0  # report objects in the body (handed out, even if they never arrive)
    status: int = 200
    drip: float = 0.0  # seconds between single bytes after the first `fast` bytes
    fast: int = 0  # body bytes sent at once before dripping
    drip_headers: bool = False  # drip the status line and headers too
    cut_at: int | None = None  # close the connection after this many body bytes
    sent: int = 0  # body bytes written to the socket (filled in while serving)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def msgids(self) -> list[str]:
        """The msgids in the body (a repeated `msgid` key counts twice)."""
        return msgids_in(self.body)

    @property
    def sent_body(self) -> bytes:
        return self.body[: self.sent]


class Reports:
    """Valid report objects with unique, increasing msgids (above int64)."""

    def __init__(self, first: int = FIRST_MSGID) -> None:
        self._next = itertools.count(first)

    def make(self, n: int) -> list[dict]:
        return [self.one() for _ in range(n)]

    def one(self, **fields: object) -> dict:
        msgid = next(self._next)
        report = {
            "msgid": msgid, "custid": f"c{msgid % 100_000:05d}", "pknum": 1, "pktotal": 1,
            "mobile": "13800138000", "countrycode": 86, "spno": "", "exno": "0006",
            "stime": "2026-12-01 17:38:55", "rtime": "2026-12-01 17:38:59", "status": 0,
            "errcode": "DELIVRD", "errdesc": "success", "exdata": f"x{msgid % 1000}",
        }  # fmt: skip
        report.update(fields)
        return report


def encode(reports: list[dict]) -> bytes:
    return json.dumps(reports, ensure_ascii=False).encode()


def batch(reports: list[dict], result: object = 0, desc: str = OK_DESC) -> bytes:
    return b'{"result":%s,"desc":"%s","rpts":%s}' % (
        json.dumps(result).encode(), desc.encode(), encode(reports),
    )  # fmt: skip


# --- the answers of the cases -----------------------------------------------------------
def good(reports: Reports, n: int) -> Answer:
    return Answer("good", batch(reports.make(n)), n)


def duplicate_rpts(reports: Reports, n: int) -> Answer:
    """Two `rpts` lists in one body: a decoder that keeps the last silently drops the first."""
    first, second = encode(reports.make(n)), encode(reports.make(n))
    body = b'{"result":0,"desc":"%s","rpts":%s,"rpts":%s}' % (OK_DESC.encode(), first, second)
    return Answer("duplicate_rpts", body, 2 * n)


def duplicate_msgid(reports: Reports, n: int) -> Answer:
    """One report with two `msgid` keys."""
    items = [encode([r])[1:-1] for r in reports.make(n)]
    items[0] = items[0][:-1] + b',"msgid":%d}' % next(reports._next)
    body = b'{"result":0,"desc":"ok","rpts":[%s]}' % b",".join(items)
    return Answer("duplicate_msgid", body, n)


def result_with_reports(reports: Reports, n: int) -> Answer:
    body = batch(reports.make(n), result=501, desc=BUSY_GB2312)
    return Answer("result_501_with_rpts", body, n)


def rpts_null() -> Answer:
    return Answer("rpts_null", b'{"result":0,"desc":"%s","rpts":null}' % OK_DESC.encode())


def with_bom(reports: Reports, n: int) -> Answer:
    return Answer("bom", BOM + batch(reports.make(n)), n)


def lone_surrogate(reports: Reports, n: int, bad: int = 1) -> Answer:
    """One report's errdesc holds `\\ud83d` (half an emoji): that report cannot be decoded."""
    items = [encode([r])[1:-1] for r in reports.make(n)]
    items[bad] = items[bad].replace(b'"errdesc": "success"', b'"errdesc": "ok \\ud83d"')
    return Answer("lone_surrogate", b'{"result":0,"desc":"ok","rpts":[%s]}' % b",".join(items), n)


def leading_zero(reports: Reports, n: int, bad: int = 1) -> Answer:
    """One report's pknum is `01`: not a JSON number."""
    items = [encode([r])[1:-1] for r in reports.make(n)]
    items[bad] = items[bad].replace(b'"pknum": 1', b'"pknum": 01')
    return Answer("leading_zero", b'{"result":0,"desc":"ok","rpts":[%s]}' % b",".join(items), n)


def cut(reports: Reports, n: int, keep: float = 0.6) -> Answer:
    body = batch(reports.make(n))
    return Answer("cut", body, n, cut_at=int(len(body) * keep))


def oversized(reports: Reports, n: int) -> Answer:
    return Answer("oversized", batch(reports.make(n)), n)


def drip(reports: Reports, n: int, interval: float, fast: int = 200) -> Answer:
    return Answer("drip", batch(reports.make(n)), n, drip=interval, fast=fast)


def drip_headers(reports: Reports, n: int, interval: float) -> Answer:
    body = batch(reports.make(n))
    return Answer("drip_headers", body, n, drip=interval, drip_headers=True)


class HostilePlatform:
    """The server. `start()`, then `base_url`; `stop()` at the end (also stops any drip)."""

    def __init__(
        self,
        script: list[Answer],
        *,
        token: str,
        log_file: Path | None = None,
        script_logins: bool = False,
        tls: ssl.SSLContext | None = None,
        tokens: dict[str, list[Answer]] | None = None,
    ) -> None:
        self.script = list(script)
        self.token = token
        # Per token (the main one's is `script`); a request with none of them is refused.
        self.scripts = {token: self.script, **{t: list(a) for t, a in (tokens or {}).items()}}
        self.script_logins = script_logins  # logins get scripted answers too (else: the token)
        self._tls = tls  # a server-side context: https:// instead of http://
        self.log_file = log_file
        self.handed_out: list[Answer] = []  # in the order they were sent
        self.empty_answers = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._threads: list[threading.Thread] = []
        scheme = "https" if tls is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> HostilePlatform:
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(10)
        self._listener.close()

    def __enter__(self) -> HostilePlatform:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def finished(self) -> bool:
        """Every scripted answer fully served (or cut as scripted)."""
        return not any(self.scripts.values()) and all(a.done.is_set() for a in self.handed_out)

    def add(self, token: str, answers: list[Answer]) -> None:
        """More answers for `token`'s account, handed out after what its script still holds."""
        with self._lock:
            self.scripts[token].extend(answers)

    def all_msgids(self) -> list[str]:
        return [m for answer in self.handed_out for m in answer.msgids]

    # --- serving ---------------------------------------------------------------------------
    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        if self._tls is not None:
            conn.settimeout(10)
            try:
                conn = self._tls.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return  # the client refused the certificate, or went away
        with conn:
            conn.settimeout(0.5)
            buffer = b""
            while not self._stopping.is_set():
                request, buffer = _read_request(conn, buffer, self._stopping)
                if request is None:
                    return
                if not self._answer(conn, request):
                    return

    def _answer(self, conn: socket.socket, request: bytes) -> bool:
        """Send one answer; False when the connection must close."""
        is_login = b"/login" in request.split(b"\r\n", 1)[0]
        if is_login and not self.script_logins:
            return self._send_whole(conn, json.dumps({"code": 0, "data": self.token}).encode())
        head = request.lower()
        token = next((t for t in self.scripts if _token_header(t) in head), None)
        token_ok = is_login or token is not None
        script = self.script if is_login else self.scripts.get(token, [])
        with self._lock:
            self.requests += 1
            answer = None
            if token_ok and script:
                answer = script.pop(0)
                self.handed_out.append(answer)
            elif token_ok:
                self.empty_answers += 1
        if not token_ok:
            return self._send_whole(conn, batch([], result=401, desc=AUTH_FAILED))
        if answer is None:
            return self._send_whole(conn, EMPTY)
        try:
            return self._send_scripted(conn, answer)
        finally:
            answer.done.set()
            self._log(answer)

    def _send_whole(self, conn: socket.socket, body: bytes, status: int = 200) -> bool:
        try:
            conn.sendall(_head(status, len(body)) + body)
        except OSError:
            return False
        return True

    def _send_scripted(self, conn: socket.socket, answer: Answer) -> bool:
        head = _head(answer.status, len(answer.body))
        body = answer.body if answer.cut_at is None else answer.body[: answer.cut_at]
        try:
            if answer.drip_headers:
                self._drip(conn, head, answer.drip, lambda _n: None)
            else:
                conn.sendall(head)
            if answer.drip:
                conn.sendall(body[: answer.fast])
                answer.sent = len(body[: answer.fast])
                self._drip(conn, body[answer.fast :], answer.drip, lambda n: _add(answer, n))
            else:
                conn.sendall(body)
                answer.sent = len(body)
        except OSError:
            return False  # the client hung up (a deadline, a limit): `sent` says how far we got
        if answer.cut_at is not None or answer.sent < len(answer.body):
            conn.shutdown(socket.SHUT_RDWR)
            return False
        return True

    def _drip(self, conn: socket.socket, data: bytes, interval: float, on_byte) -> None:
        for index in range(len(data)):
            if self._stopping.wait(interval):
                raise OSError("server stopping")
            conn.sendall(data[index : index + 1])
            on_byte(1)

    def _log(self, answer: Answer) -> None:
        if self.log_file is None:
            return
        entry = {
            "kind": answer.kind, "msgids": answer.msgids, "body_bytes": len(answer.body),
            "sent_bytes": answer.sent,
        }  # fmt: skip
        with self._lock, self.log_file.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")


def _token_header(token: str) -> bytes:
    return f"finovy-access-token: {token}\r\n".lower().encode()


def _add(answer: Answer, n: int) -> None:
    answer.sent += n


def _head(status: int, length: int) -> bytes:
    reason = {200: "OK", 401: "Unauthorized"}.get(status, "Status")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json;charset=UTF-8\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _read_request(
    conn: socket.socket, buffer: bytes, stopping: threading.Event
) -> tuple[bytes | None, bytes]:
    """One request (headers + Content-Length body) off a keep-alive connection, or None."""
    while b"\r\n\r\n" not in buffer:
        chunk = _recv(conn, stopping)
        if not chunk:
            return None, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(rest) < length:
        chunk = _recv(conn, stopping)
        if not chunk:
            return None, b""
        rest += chunk
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


def _recv(conn: socket.socket, stopping: threading.Event) -> bytes:
    while not stopping.is_set():
        try:
            return conn.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return b""
    return b""


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
