"""Routing by a table for paths without parameters, Starlette's routing for the rest.

Starlette's router tries each route's regular expression in turn: with the API's forty
routes that was a good share of a send's time in the HTTP layer. A path without
parameters is found here in one dictionary lookup, with the same outcome: a path is in
the table only for the methods of the first route that would have matched it in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Lifespan, Receive, Scope, Send


class TableRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], lifespan: Lifespan[Any] | None) -> None:
        super().__init__(routes=list(routes), lifespan=lifespan)
        self.table: dict[tuple[str, str], Route] = {}
        for route in routes:
            if not isinstance(route, Route) or route.param_convertors or not route.methods:
                continue
            for method in route.methods:
                if self._first_full_match(method, route.path) is route:
                    self.table.setdefault((method, route.path), route)

    def _first_full_match(self, method: str, path: str) -> BaseRoute | None:
        probe: Scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        for route in self.routes:
            match, _ = route.matches(probe)
            if match is Match.FULL:
                return route
        return None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.table.get((scope["method"], scope["path"]))
        if route is None:
            await super().app(scope, receive, send)
            return
        scope.setdefault("router", self)
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = dict(scope.get("path_params", {}))
        await route.handle(scope, receive, send)
