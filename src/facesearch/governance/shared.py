"""Login throttling kept in the catalog's database: one truth for every API process of a home.

:class:`SharedLoginThrottle` follows the rules of :class:`~facesearch.governance.accounts.LoginThrottle`
(the same parameters and answers) but counts failures and blocks in the ``login_failures`` and
``login_blocks`` tables, so ``serve --workers N`` or several servers behind one proxy cannot be
used to multiply a guesser's tries: a failure through one process delays the next try through
every other. Times are wall-clock seconds (every process shares the clock, not a monotonic one).

Concurrency: each call is one short transaction. Deciding whether a refusal is the first of its
blocking period is a single conditional ``UPDATE`` (only one process can flip ``reported``), and
a block only ever grows (``until`` is the larger of the old and the new value), so two processes
counting failures at once can only block longer, never less.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from facesearch.catalog import Catalog
from facesearch.governance.accounts import LoginThrottle
from facesearch.governance.schema import LoginBlock, LoginFailure


def _key(parts: tuple[str, ...]) -> str:
    return "\x1f".join(parts)[:300]


class SharedLoginThrottle(LoginThrottle):
    """:class:`LoginThrottle` with its state in the database (see the module docstring)."""

    def __init__(self, catalog: Catalog, *, clock: Callable[[], float] | None = None, **rules) -> None:
        super().__init__(clock=clock or time.time, **rules)
        self.catalog = catalog

    def _db_keys(self, username: str, client: str) -> list[str]:
        return [_key(k) for k in self._keys(username, client)]

    def wait_s(self, username: str, client: str) -> float:
        now = self.clock()
        with self.catalog.session() as s:
            until = s.scalar(select(func.max(LoginBlock.until)).where(LoginBlock.key.in_(self._db_keys(username,
                                                                                                       client))))
        return max(0.0, (until or 0.0) - now)

    def first_refusal(self, username: str, client: str) -> bool:
        now = self.clock()
        with self.catalog.session() as s:
            flipped = s.execute(update(LoginBlock).where(LoginBlock.key.in_(self._db_keys(username, client)),
                                                         LoginBlock.until > now, LoginBlock.reported.is_(False))
                                .values(reported=True))
            s.commit()
            return bool(flipped.rowcount)

    def failed(self, username: str, client: str) -> float:
        now = self.clock()
        pair, per_client = self._db_keys(username, client)
        for _attempt in range(5):
            with self.catalog.session() as s:
                try:
                    # Old failures no longer count anywhere: bounded like the in-memory table.
                    s.execute(delete(LoginFailure).where(LoginFailure.at <= now - self.window_s))
                    s.execute(delete(LoginBlock).where(LoginBlock.until <= now))
                    s.add_all([LoginFailure(key=pair, at=now), LoginFailure(key=per_client, at=now)])
                    s.flush()
                    recent = self._count(s, pair, now)
                    delay = 0.0
                    if recent >= self.free_failures:
                        delay = min(self.base_delay_s * 2 ** (recent - self.free_failures), self.max_delay_s)
                        self._block_in(s, pair, now + delay)
                    if self._count(s, per_client, now) >= self.max_failures_per_client:
                        self._block_in(s, per_client, now + self.lockout_s)
                        s.execute(delete(LoginFailure).where(LoginFailure.key == per_client))
                        delay = max(delay, self.lockout_s)
                    s.commit()
                    return delay
                except IntegrityError:
                    s.rollback()  # another process created the same block row first: count again
        raise RuntimeError("could not record a failed login (persistent contention)")

    def _count(self, s: Session, key: str, now: float) -> int:
        return s.scalar(select(func.count()).select_from(LoginFailure)
                        .where(LoginFailure.key == key, LoginFailure.at > now - self.window_s)) or 0

    @staticmethod
    def _block_in(s: Session, key: str, until: float) -> None:
        row = s.scalar(select(LoginBlock).where(LoginBlock.key == key).with_for_update())
        if row is None:
            s.add(LoginBlock(key=key, until=until, reported=False))
            s.flush()
        else:
            row.until, row.reported = max(row.until, until), False

    def succeeded(self, username: str, client: str) -> None:
        with self.catalog.session() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.key == self._db_keys(username, client)[0]))
            s.commit()
