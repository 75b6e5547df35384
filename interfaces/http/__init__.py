"""The Starlette HTTP API (docs/API.md §4)."""
