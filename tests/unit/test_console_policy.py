"""The console's Content-Security-Policy: this origin only, and no header injection."""

from __future__ import annotations

from interfaces.console import STATIC, content_security_policy


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().partition(" ")[::2] for part in policy.split(";"))


def test_the_policy_allows_only_this_origin_and_its_websocket() -> None:
    d = directives(content_security_policy("127.0.0.1:8000"))
    assert d["default-src"] == "'none'"
    assert d["script-src"] == d["style-src"] == "'self'"
    assert d["connect-src"] == "'self' ws://127.0.0.1:8000 wss://127.0.0.1:8000"
    assert d["frame-ancestors"] == "'none'" and d["base-uri"] == "'none'"
    assert "unsafe" not in content_security_policy("courier.example")
    assert "ws://[::1]:8000" in content_security_policy("[::1]:8000")


def test_a_strange_host_header_never_reaches_the_policy() -> None:
    for host in ("evil.example; script-src *", "a b", "x'y", "", None, "h:99999999"):
        d = directives(content_security_policy(host))
        assert d["connect-src"] == "'self'", host
        assert d["script-src"] == "'self'"


def test_every_file_the_page_loads_is_shipped() -> None:
    page = (STATIC / "index.html").read_text()
    for path in ("console.css", "favicon.svg", "js/app.js"):
        assert f'"{path}"' in page and (STATIC / path).is_file()
    modules = {p.name for p in (STATIC / "js").glob("*.js")}
    for module in modules:
        for line in (STATIC / "js" / module).read_text().splitlines():
            if line.startswith("import ") and ' from "./' in line:
                assert line.split('"./')[1].split('"')[0] in modules, line
