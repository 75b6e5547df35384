"""Courier's use cases: commands, queries and the policies that follow events."""
