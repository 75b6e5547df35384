"""Read models built from the event log, each exactly once per event."""
