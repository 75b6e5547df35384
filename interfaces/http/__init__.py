"""The Starlette HTTP API (SPEC §4)."""
