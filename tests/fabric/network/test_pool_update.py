"""A status change of one backend is O(1) on the pool's order: it does not re-sort every
backend (the controller passes each instance's change alone, thousands a second at scale)."""

from __future__ import annotations

import pytest

from fabric.network import Backend
from fabric.network._pool import Pool


def test_one_backends_status_change_keeps_rotation_without_walking_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = Pool(ignore_status=False, probed=False)
    ids = [f"web_IN_{i:04d}" for i in range(2000)]
    pool.set_backends(Backend(i, "127.0.0.1", 20000 + n) for n, i in enumerate(ids))

    def walked() -> None:
        raise AssertionError("a one-backend update walked the whole pool")

    monkeypatch.setattr(pool, "entries", walked)
    busy = set(ids[::3])
    for i in ids[::3]:
        pool.update(i, ready=None, busy=True)
    for i in ids[::6]:
        pool.update(i, ready=False, busy=None)  # busy and not ready: still out, nothing moves
    assert [e.backend.instance_id for e in pool.rotation] == [i for i in ids if i not in busy]
    back = ids[::3][::2]
    for i in back:
        pool.update(i, ready=True, busy=False)
    busy -= set(back)
    assert [e.backend.instance_id for e in pool.rotation] == [i for i in ids if i not in busy]
