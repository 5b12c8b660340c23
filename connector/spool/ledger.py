"""The spool's numbering: what is pending (the `Index`), the next and the released sequence.

And the two locks every part of the spool shares. `write_lock` serializes writers (held across
write + fsync: append, roll, renumbering); `lock` guards this state and the segment set, and is
never held during an fsync, so the publisher is not stalled by the disk.
"""

from __future__ import annotations

import threading

from connector.spool.index import Index


class Ledger:
    """Pending entries and sequence numbers; read and changed with `lock` held."""

    def __init__(self, cache_bytes: int, memo_bytes: int) -> None:
        self.write_lock = threading.Lock()
        self.lock = threading.Lock()
        self.index = Index(cache_bytes, memo_bytes)
        self.next_seq = 1
        self.released = 0  # entries at or below it are done (the `released` file's mark)

    @property
    def last_seq(self) -> int:
        """The highest sequence number assigned so far (or the floor it started from)."""
        return self.next_seq - 1
