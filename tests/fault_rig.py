"""A private broker behind a TCP proxy: the network between clients and broker can be cut.

The broker listens on its own port but advertises the proxy's, so after the first metadata
answer every client connection goes through the proxy, whatever address it bootstrapped from.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from tcp_proxy import TcpProxy

import devkafka


@dataclass
class ProxiedBroker:
    broker: devkafka.Broker
    proxy: TcpProxy

    @property
    def bootstrap(self) -> str:
        """What clients should be given: the proxy, so even the bootstrap can be cut."""
        return self.proxy.address

    @property
    def direct(self) -> str:
        """The broker's internal listener: the test's own checks never go through the proxy."""
        return self.broker.internal_bootstrap


@contextlib.contextmanager
def proxied_broker() -> Iterator[ProxiedBroker]:
    """Start a fresh broker behind a fresh proxy; stop and delete both afterwards."""
    port = devkafka.free_port()
    proxy = TcpProxy((devkafka.HOST, port)).start()
    broker = devkafka.Broker(
        f"pytest-proxied-{uuid.uuid4().hex[:8]}", port=port, advertise=proxy.address
    )
    try:
        broker.start()
        yield ProxiedBroker(broker, proxy)
    finally:
        proxy.close()
        broker.wipe()
        shutil.rmtree(broker.dir, ignore_errors=True)
