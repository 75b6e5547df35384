"""Courier's edges: HTTP, WebSocket and the command line."""
