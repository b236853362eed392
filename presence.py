"""Who has the app open right now: a user with an open socket (GET /ws)
anywhere needs no Web Push (push.py), since the page shows the message.

With one process, the hub's own sockets say it. With REDIS_URL set, sockets
are spread over every worker and replica, so each process writes its own to
Redis: per user, a sorted set of socket ids, each scored by when it stops
counting. Every process renews the scores of its sockets every
`RENEW_SECONDS`; a process that crashes stops renewing, and its sockets stop
counting `EXPIRE_SECONDS` later. A user is online if one score is still in
the future (ZCOUNT now +inf).

Redis unreachable: the user counts as away, so they get a push; one push
too many beats one missed.
"""

import logging
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from uuid import uuid4

import anyio
import redis.asyncio as redis
from redis.exceptions import RedisError

from config import settings
from hub import LiveSocket, hub

logger = logging.getLogger("messageapp.presence")

RENEW_SECONDS = 15.0
EXPIRE_SECONDS = 45.0  # three renewals missed: the process is gone
REDIS_TIMEOUT_SECONDS = 2.0  # a presence write or check that takes longer is given up


def key(user_id: int) -> str:
    # Under the events' channel name: deployments sharing a Redis stay apart.
    return f"{settings.REDIS_CHANNEL}:presence:{user_id}"


class Presence:
    def __init__(self) -> None:
        self.redis: redis.Redis | None = None
        # This process's sockets and their ids in Redis (a socket's id() may be reused).
        self.ids: dict[LiveSocket, str] = {}

    async def arrived(self, socket: LiveSocket) -> None:
        """A socket was registered with the hub (realtime.py)."""
        self.ids[socket] = uuid4().hex
        if self.redis is not None:
            await self._write({socket: self.ids[socket]})

    async def left(self, socket: LiveSocket) -> None:
        """A socket was removed from the hub (realtime.py)."""
        socket_id = self.ids.pop(socket, None)
        if self.redis is None or socket_id is None:
            return
        # Shielded: a socket that ends because the server stops must still go.
        with anyio.CancelScope(shield=True), anyio.move_on_after(REDIS_TIMEOUT_SECONDS):
            try:
                await self.redis.zrem(key(socket.user.id), socket_id)
            except RedisError:
                logger.warning("Could not remove a socket from presence in Redis")

    async def _write(self, sockets: dict[LiveSocket, str]) -> None:
        assert self.redis is not None
        now = time.time()
        with anyio.move_on_after(REDIS_TIMEOUT_SECONDS):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for socket, socket_id in sockets.items():
                        name = key(socket.user.id)
                        pipe.zadd(name, {socket_id: now + EXPIRE_SECONDS})
                        # Sockets of crashed processes, expired: gone from the set,
                        # and the set itself once nobody renews it.
                        pipe.zremrangebyscore(name, "-inf", now)
                        pipe.expire(name, int(EXPIRE_SECONDS * 2))
                    await pipe.execute()
            except RedisError:
                logger.warning("Could not write presence to Redis")

    async def online(self, user_ids: Collection[int]) -> set[int]:
        """Of `user_ids`, those with an open socket on any worker or replica."""
        here = {u for u in user_ids if u in hub.sockets}
        if self.redis is None:
            return here
        elsewhere = [u for u in user_ids if u not in here]
        if not elsewhere:
            return here
        now = time.time()
        with anyio.move_on_after(REDIS_TIMEOUT_SECONDS):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for user_id in elsewhere:
                        pipe.zcount(key(user_id), now, "+inf")
                    counts = await pipe.execute()
                return here | {u for u, count in zip(elsewhere, counts, strict=True) if count}
            except RedisError:
                logger.warning("Could not read presence from Redis: pushing to all")
        return here

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Keep this process's sockets present in Redis while the app runs
        (main.py's lifespan); nothing to do without REDIS_URL."""
        if not settings.REDIS_URL:
            yield
            return
        self.redis = redis.Redis.from_url(settings.REDIS_URL)

        async def renew() -> None:
            while True:
                await anyio.sleep(RENEW_SECONDS)
                if self.ids:
                    await self._write(dict(self.ids))

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(renew)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            connection, self.redis = self.redis, None
            await connection.aclose()


presence = Presence()
