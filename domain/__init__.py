"""Courier's domain model: aggregates, their events and rules."""
