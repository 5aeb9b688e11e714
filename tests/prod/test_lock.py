"""The writer lock: compare-and-swap takeover of a stale lock (S3 and local), renewal while held,
and a lock left by a failed run of this process taken over without `pipeline unlock`."""

from __future__ import annotations

import json
import threading
import time

import pytest

from flowlake.jobs.run import lock as lk


def _stale_body(owner="dead-run") -> bytes:
    # a lock from another host, not renewed for far longer than any TTL
    return json.dumps({"owner": owner, "host": "elsewhere", "pid": 1, "acquired_at_ms": 1000,
                       "renewed_at_ms": 1000}).encode()


def _race(lake_root: str) -> tuple[list[str], list[BaseException]]:
    """Two runs find the same stale lock; both read its version before either swaps it."""
    barrier = threading.Barrier(2, timeout=30)
    won, lost = [], []
    locks = [lk.LakeLock(lake_root, owner=f"run-{i}") for i in range(2)]
    for lock in locks:
        swap = lock.store.replace

        def replace(body, version, _swap=swap):
            barrier.wait()  # both have read the stale version: now both try to swap it
            return _swap(body, version)

        lock.store.replace = replace

    def take(lock):
        try:
            lock.acquire()
            won.append(lock.owner)
        except lk.LakeLockedError as err:
            lost.append(err)

    threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for lock in locks:
        lock.release()
    return won, lost


def test_two_simultaneous_takeovers_on_s3_exactly_one_wins(s3_env):
    bucket = s3_env.new_bucket()
    client = s3_env.client()
    root = f"s3://{bucket}/lake"
    for _ in range(3):
        client.put_object(Bucket=bucket, Key=f"lake/{lk.LOCK_NAME}", Body=_stale_body())
        won, lost = _race(root)
        assert len(won) == 1 and len(lost) == 1, (won, lost)
        assert "is being written by run " + won[0] in str(lost[0]) or "took it first" in str(lost[0])


def test_two_simultaneous_takeovers_on_a_local_lake_exactly_one_wins(tmp_path):
    lake = tmp_path / "lake"
    (lake / "_meta").mkdir(parents=True)
    for _ in range(3):
        (lake / lk.LOCK_NAME).write_bytes(_stale_body())
        won, lost = _race(str(lake))
        assert len(won) == 1 and len(lost) == 1, (won, lost)


def test_a_lock_held_longer_than_its_ttl_is_renewed(s3_env, monkeypatch):
    monkeypatch.setenv(lk.TTL_ENV, "2")  # renewed every second
    bucket = s3_env.new_bucket()
    root = f"s3://{bucket}/lake"
    holder = lk.LakeLock(root, owner="long-run")
    holder.acquire()
    try:
        time.sleep(4.5)  # more than twice the TTL
        info = lk._parse(holder.store.read()[0])
        assert info.owner == "long-run" and time.time() * 1000 - info.renewed_at_ms < 2000
        elsewhere = lk.LockInfo(info.owner, "elsewhere", info.pid, info.acquired_at_ms, info.renewed_at_ms)
        assert not lk._stale(elsewhere)  # seen from another host it is alive ...
        with pytest.raises(lk.LakeLockedError, match="long-run"):
            lk.LakeLock(root, owner="other").acquire()
        holder._stop.set()  # ... and once renewal stops, it goes stale after the TTL
        time.sleep(2.5)
        info = lk._parse(holder.store.read()[0])
        assert lk._stale(lk.LockInfo(info.owner, "elsewhere", info.pid, info.acquired_at_ms, info.renewed_at_ms))
    finally:
        holder.release()


def test_a_lock_a_failed_run_of_this_process_could_not_remove_is_taken_over(tmp_path):
    """The store was down when the run ended: its lock stays; the next run (same process) takes it over."""
    root = str(tmp_path / "lake")
    first = lk.LakeLock(root, owner="failed-run")
    first.acquire()
    first.store.delete = lambda: (_ for _ in ()).throw(OSError("store down"))  # release cannot reach it
    first.release()
    assert (tmp_path / "lake" / lk.LOCK_NAME).exists()
    second = lk.LakeLock(root, owner="next-run")
    second.acquire()
    try:
        assert second.took_over is not None and second.took_over.owner == "failed-run"
    finally:
        second.release()
    assert not (tmp_path / "lake" / lk.LOCK_NAME).exists()
