"""Consumers of the six queues: run jobs, record their outcomes, then acknowledge.

A broker message carries a batch of jobs of one queue (infrastructure/broker.py). The
five queues of message processing hand their batches to one ``BatchEngine`` per process,
which runs whatever has arrived, across queues, as one unit of work
(application/batches.py): one read of the messages, one event-store transaction, one
transaction for the outcomes, then every broker message of the unit is acknowledged.
``MESSAGE_CLEANUP`` (and any processor that cannot run batches) runs job by job on a
pool of ``concurrency`` threads.

``runner.py`` runs a job and decides what its outcome means (recorded, retried, failed);
``consumer.py`` is one queue's consumer thread, its pool and its acknowledgements;
``engine.py`` is the ``BatchEngine``; ``Workers`` here starts and stops them all.
"""

from infrastructure.worker.consumer import QueueConsumer
from infrastructure.worker.engine import BatchEngine
from infrastructure.worker.runner import JobRunner

__all__ = ["BatchEngine", "JobRunner", "QueueConsumer", "Workers"]


class Workers:
    """Every queue's consumer in this process, and the engine of the batched ones."""

    def __init__(self, consumers: list[QueueConsumer], engine: BatchEngine | None = None) -> None:
        self.consumers = consumers
        self.engine = engine

    def start(self) -> None:
        if self.engine is not None:
            self.engine.start()
        for consumer in self.consumers:
            consumer.start()

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()
            consumer.runner.faults.release()
        if self.engine is not None:
            self.engine.stop()
        for consumer in self.consumers:
            consumer.join(timeout=5)
        if self.engine is not None:
            self.engine.join(timeout=5)
