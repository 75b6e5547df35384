"""Adapters and processes: the event store, broker, relay, workers, crypto."""
