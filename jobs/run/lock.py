"""One writer per lake: a lock object at ``<lake>/_meta/writer.lock``.

Delta on S3 (s3a's single-driver log store) is safe with one writer per
table only: two drivers committing to one table at once can lose a commit.
Every pipeline stage takes this lock before it writes and releases it when
done, so a second concurrent run fails fast with :class:`LakeLockedError`.

The lock is created atomically: ``O_CREAT | O_EXCL`` on a local lake, a
conditional put (``If-None-Match: *``) on S3. A lock is stale when its process
is gone (same host), when the run that took it in this very process has ended
(a run whose store failed could not remove it), or when it was not renewed
for the time to live (``FLOWLAKE_LOCK_TTL_S``, default 6 h). A stale lock is
taken over by a compare-and-swap on the version read (S3: a put with
``If-Match: <ETag>``; local: a swap under ``flock``), so of two simultaneous
takeovers exactly one wins. While held, the lock is renewed every third of the
TTL, so a run longer than the TTL keeps it. ``flowlake pipeline unlock
--lake`` removes one by hand (not needed after a crash or an outage).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from flowlake.jobs.run.lock_store import LOCK_NAME, store_for  # noqa: F401 - LOCK_NAME re-exported

log = logging.getLogger(__name__)
TTL_ENV = "FLOWLAKE_LOCK_TTL_S"
DEFAULT_TTL_S = 6 * 3600
_HELD: set[str] = set()  # owners whose lock this process holds now


class LakeLockedError(RuntimeError):
    """Another run holds the lake's writer lock."""


@dataclass(frozen=True)
class LockInfo:
    owner: str
    host: str
    pid: int
    acquired_at_ms: int
    renewed_at_ms: int = 0

    def describe(self) -> str:
        age = (time.time() * 1000 - self.acquired_at_ms) / 1000
        return f"run {self.owner} (pid {self.pid} on {self.host}, {age:.0f} s ago)"


def _ttl_s() -> int:
    return int(os.environ.get(TTL_ENV, DEFAULT_TTL_S))


def _parse(body: bytes | None) -> LockInfo | None:
    if body is None:
        return None
    try:
        d = json.loads(body)
        return LockInfo(str(d["owner"]), str(d["host"]), int(d["pid"]), int(d["acquired_at_ms"]),
                        int(d.get("renewed_at_ms") or d["acquired_at_ms"]))
    except (ValueError, KeyError, TypeError):
        return LockInfo("(unreadable lock)", "?", -1, 0)


def _stale(info: LockInfo) -> bool:
    if time.time() * 1000 - max(info.acquired_at_ms, info.renewed_at_ms) > _ttl_s() * 1000:
        return True
    if info.host == socket.gethostname() and info.pid == os.getpid():
        return info.owner not in _HELD  # taken by a run of this process that has ended
    if info.host == socket.gethostname() and info.pid > 0:
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


class LakeLock:
    """Context manager holding the lake's writer lock for ``owner`` (a run id), renewed while held."""

    def __init__(self, lake_root: str, *, owner: str) -> None:
        self.lake_root = lake_root
        self.owner = owner
        self.store = store_for(lake_root)
        self.held = False
        self.took_over: LockInfo | None = None  # the stale lock this one replaced, if any
        self._body = b""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _make_body(self, acquired_at_ms: int) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "acquired_at_ms": acquired_at_ms, "renewed_at_ms": int(time.time() * 1000)}).encode()

    def acquire(self) -> None:
        # registered before the lock is written: another run of this process that reads it between the
        # write and the registration must not take it for a dead run's
        _HELD.add(self.owner)
        try:
            self._acquire()
        except BaseException:
            if not self.held:
                _HELD.discard(self.owner)
            raise

    def _acquire(self) -> None:
        body = self._make_body(int(time.time() * 1000))
        for _ in range(3):
            if self.store.create(body):
                return self._hold(body)
            current, version = self.store.read()
            info = _parse(current)
            if info is None:
                continue  # released in between: try again
            if info.owner == self.owner and info.host == socket.gethostname() and info.pid == os.getpid():
                self.held = True  # re-entered by the same run (stages run apart in one process)
                self._body = current
                return None
            if not _stale(info):
                raise LakeLockedError(
                    f"the lake {self.lake_root} is being written by {info.describe()}: one writer per lake "
                    "(Delta on S3 is not safe with two). Wait for it to finish; if that run is dead on another "
                    f"host, remove the lock with `flowlake pipeline unlock --lake {self.lake_root}`.")
            if self.store.replace(body, version):  # compare-and-swap: of two takeovers one wins
                log.warning("took over the stale writer lock of %s", info.describe())
                self.took_over = info
                return self._hold(body)
        raise LakeLockedError(f"could not take the writer lock of {self.lake_root}: another run took it first")

    def _hold(self, body: bytes) -> None:
        self.held = True
        self._body = body
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lock-renew-{self.owner}", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        interval = max(1.0, _ttl_s() / 3)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except Exception as err:  # noqa: BLE001 - the store may be down: the run fails on its own
                log.info("could not renew the writer lock of %s: %s", self.lake_root, err)

    def renew(self) -> bool:
        """Refresh the lock's renewal time, if it is still this run's (conditional on its version)."""
        current, version = self.store.read()
        info = _parse(current)
        if info is None or info.owner != self.owner:
            log.error("the writer lock of %s is no longer held by run %s", self.lake_root, self.owner)
            return False
        body = self._make_body(info.acquired_at_ms)
        if self.store.replace(body, version):
            self._body = body
            return True
        return False

    def release(self) -> None:
        """Remove the lock if this run holds it. A store that cannot be reached leaves it; the next run
        takes it over (its holder in this process has ended, or its process is gone)."""
        if not self.held:
            return
        self.held = False
        self._stop.set()
        _HELD.discard(self.owner)
        try:
            info = _parse(self.store.read()[0])
            if info is not None and info.owner == self.owner:
                self.store.delete()
        except Exception as err:  # noqa: BLE001 - never hide the run's own error behind this one
            log.info("could not remove the writer lock of %s (%s): the next run takes it over",
                     self.lake_root, err)

    def __enter__(self) -> "LakeLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def force_unlock(lake_root: str) -> LockInfo | None:
    """Remove the lock whatever holds it; returns what held it."""
    store = store_for(lake_root)
    info = _parse(store.read()[0])
    store.delete()
    return info
