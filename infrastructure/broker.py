"""kombu: the six queues declared once, connections and a thread-safe publisher."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from kombu import Connection, Exchange, Queue

from application.jobs import (
    LANED,
    LANES,
    MAX_BATCH,
    MESSAGE_CLEANUP,
    QUEUES,
    Job,
    batch_to_wire,
    lane_name,
)

EXCHANGE = Exchange("courier", type="direct", durable=True)


def queue_for(name: str) -> Queue:
    return Queue(name, exchange=EXCHANGE, routing_key=name, durable=True)


def lanes_of(queue: str) -> list[str]:
    """The broker queues of a queue, in the order its consumer takes them: ``QUEUE.high``,
    ``QUEUE``, ``QUEUE.low`` for the message queues, the queue alone for cleanup."""
    if queue not in LANED:
        return [queue]
    return [lane_name(queue, priority) for priority in LANES]


class Broker:
    """Builds connections to ``BROKER_URL``; one publisher connection per thread."""

    def __init__(self, url: str, visibility_timeout: float = 660.0) -> None:
        self.url = url
        self.visibility_timeout = visibility_timeout
        self.queues = {lane: queue_for(lane) for name in QUEUES for lane in lanes_of(name)}
        self._local = threading.local()
        self._declared = False
        self._declare_lock = threading.Lock()
        self._opened: list[Connection] = []

    def transport_options(self) -> dict[str, Any]:
        if self.url.startswith("memory"):
            return {"polling_interval": 0.02}
        if self.url.startswith("redis"):
            # Unacked jobs of a worker that died come back after this many seconds.
            return {
                "visibility_timeout": self.visibility_timeout,
                "unacked_restore_interval": 5,
                "socket_timeout": 5,
                "socket_connect_timeout": 5,
            }
        return {}

    def connection(self) -> Connection:
        return Connection(
            self.url,
            transport_options=self.transport_options(),
            connect_timeout=5,
            heartbeat=0,
        )

    def declare(self, conn: Connection) -> None:
        with self._declare_lock:
            channel = conn.default_channel
            for queue in self.queues.values():
                queue.bind(channel).declare()
            self._declared = True

    def _producer(self) -> Any:
        producer = getattr(self._local, "producer", None)
        if producer is None:
            conn = self.connection()
            conn.ensure_connection(max_retries=3)
            self.declare(conn)
            producer = conn.Producer(serializer="json")
            with self._declare_lock:
                self._opened.append(conn)
            self._local.conn = conn
            self._local.producer = producer
        return producer

    def reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.producer = None
        self._local.conn = None
        if conn is not None:
            with self._declare_lock:
                self._opened = [c for c in self._opened if c is not conn]
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                conn.release()

    def close(self) -> None:
        """Close every publisher connection this broker opened, on any thread."""
        with self._declare_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            with contextlib.suppress(Exception):
                conn.release()
        self._local = threading.local()

    def publish(self, jobs: list[Job]) -> None:
        """Publish every job (JSON, persistent); reconnect once on a broken connection.

        The jobs of one queue travel together, up to ``MAX_BATCH`` in a broker message.
        They go through the default exchange straight to the queue of that name: a
        Redis that lost its keys (exchange bindings included) still takes them, where
        a named exchange would find no binding and drop them as undeliverable.
        """
        if not jobs:
            return
        by_route: dict[str, list[Job]] = {}
        for job in jobs:
            by_route.setdefault(job.route, []).append(job)
        batches = [
            group[start : start + size]
            for route, group in by_route.items()
            for size in [1 if route == MESSAGE_CLEANUP else MAX_BATCH]
            for start in range(0, len(group), size)
        ]
        for attempt in (1, 2):
            try:
                producer = self._producer()
                for batch in batches:
                    producer.publish(
                        batch[0].to_wire() if len(batch) == 1 else batch_to_wire(batch),
                        exchange="",
                        routing_key=batch[0].route,
                        delivery_mode=2,
                        message_id=batch[0].job_id,
                        retry=True,
                        retry_policy={"max_retries": 3, "interval_start": 0.1},
                    )
                return
            except Exception:
                self.reset()
                if attempt == 2:
                    raise

    def depth(self, name: str) -> int:
        """Jobs waiting in a queue (not yet delivered to a worker)."""
        return self.depths([name])[name]

    def depths(self, names: list[str]) -> dict[str, int]:
        """Jobs waiting in each queue (all its lanes), over one connection.

        A declare (not a passive one: Redis drops an empty list, which a passive
        declare would report as a missing queue) answers the count on every transport.
        """
        with self.connection() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.1, interval_max=0.1)
            channel = conn.default_channel
            result = {}
            for name in names:
                result[name] = 0
                for lane in lanes_of(name):
                    _, count, _ = self.queues[lane].bind(channel).queue_declare()
                    result[name] += int(count)
            return result

    def ping(self) -> bool:
        try:
            with self.connection() as conn:
                conn.ensure_connection(max_retries=1)
                return True
        except Exception:
            return False
