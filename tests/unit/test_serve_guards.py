"""Who may ask the server: the API key on every route (the routes are read from the app itself), and without a key,
the Host check against DNS rebinding and the origin checks against cross-site requests."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from serve_live import assert_openai_error, live_server, request
from test_serve_scheduler import EchoEngine

from tuneforge.serve.app import create_app
from tuneforge.serve.catalog import Catalog
from tuneforge.serve.guards import bearer_token, host_name
from tuneforge.serve.scheduler import Scheduler

KEY = "s3cret-key"

# A valid request for each route of the app: (query string, JSON body). The scenario test fails for a route that
# is missing here, so that every new route is checked against the key too.
VALID: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {
    ("GET", "/health"): ("", None),
    ("GET", "/v1/models"): ("", None),
    ("GET", "/v1/models/{model:path}"): ("", None),
    ("POST", "/v1/chat/completions"): ("", {"model": "echo", "messages": [{"role": "user", "content": "abc"}]}),
    ("POST", "/v1/completions"): ("", {"model": "echo", "prompt": "abc", "max_tokens": 3}),
    ("GET", "/generate"): ("?prompt=abc&max_tokens=3", None),
}


@dataclass
class Served:
    url: str
    app: Any
    engine: EchoEngine


def _serve(api_key: str | None, host: str = "127.0.0.1") -> Iterator[Served]:
    engine = EchoEngine()
    app = create_app(engine, Catalog("echo"), Scheduler(engine, 2, 0.0, 8), api_key=api_key, host=host)
    with live_server(app) as url:
        yield Served(url, app, engine)


@pytest.fixture(scope="module")
def keyed() -> Iterator[Served]:
    yield from _serve(KEY)


@pytest.fixture(scope="module")
def keyless() -> Iterator[Served]:
    yield from _serve(None, host="127.0.0.2")


def _routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) the app's router serves."""
    return sorted((method, route.path) for route in app.router.routes for method in getattr(route, "methods", ()))


def _call(served: Served, method: str, path: str, headers: dict[str, str]) -> Any:
    query, body = VALID[(method, path)]
    return request(served.url, method, path.replace("{model:path}", "echo") + query, body, headers)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer k", "k"),
        ("bearer k", "k"),
        ("BEARER   k ", "k"),
        ("k", None),
        ("Basic k", None),
        ("Bearer ", None),
        ("Bearerk", None),
        ("", None),
    ],
)
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("localhost:8000", "localhost"),
        ("LocalHost", "localhost"),
        ("[::1]:80", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("evil.example:8000", "evil.example"),
        ("localhost:http", None),
        ("localhost:", None),
        ("[::1", None),
        ("::1", None),
        ("", None),
    ],
)
def test_host_name(value: str, name: str | None) -> None:
    assert host_name(value) == name


@pytest.mark.scenario("api_key_routes")
def test_the_api_key_guards_every_route_of_the_app(keyed: Served) -> None:
    routes = _routes(keyed.app)
    assert set(routes) == set(VALID), "give every route a valid request in VALID"
    refused = {
        "no key": {},
        "bare key": {"Authorization": KEY},
        "wrong key": {"Authorization": "Bearer wrong"},
        "key with a suffix": {"Authorization": f"Bearer {KEY}x"},
        "key prefix": {"Authorization": f"Bearer {KEY[:-1]}"},
        "other scheme": {"Authorization": f"Basic {KEY}"},
        "key in another header": {"X-Api-Key": KEY},
    }
    for method, path in routes:
        for why, headers in refused.items():
            reply = _call(keyed, method, path, headers)
            assert reply.status == 401, (method, path, why, reply.status)
            assert_openai_error(reply, 401, code="invalid_api_key")
            assert reply.headers["www-authenticate"] == "Bearer"
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            reply = _call(keyed, method, path, {"Authorization": f"{scheme} {KEY}"})
            assert reply.status == 200, (method, path, scheme, reply.raw[:200])
    assert keyed.engine.batches, "the accepted requests were answered by the engine"
    unknown = request(keyed.url, "GET", "/nowhere")
    assert_openai_error(unknown, 401, code="invalid_api_key")  # the key is checked before routing


def test_two_authorization_headers_are_refused(keyed: Served) -> None:
    headers = [("Authorization", f"Bearer {KEY}"), ("Authorization", "Bearer wrong")]
    connection = http.client.HTTPConnection(keyed.url.removeprefix("http://"), timeout=30)
    connection.putrequest("GET", "/health")
    for name, value in headers:
        connection.putheader(name, value)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    assert status == 401


def test_with_a_key_any_host_name_may_be_used(keyed: Served) -> None:
    reply = request(keyed.url, "GET", "/health", headers={"Host": "server.lan:8000", "Authorization": f"Bearer {KEY}"})
    assert reply.status == 200 and reply.json["models"] == ["echo"]


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:1234", "127.0.0.1", "[::1]:8000", "127.0.0.2:8000"])
def test_without_a_key_this_machine_s_names_are_served(keyless: Served, host: str) -> None:
    reply = request(keyless.url, "GET", "/health", headers={"Host": host})
    assert reply.status == 200 and reply.json["models"] == ["echo"]


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io", "localhost:x"]
)
def test_without_a_key_other_host_names_are_refused(keyless: Served, host: str) -> None:
    batches = len(keyless.engine.batches)
    for method, path in VALID:
        reply = _call(keyless, method, path, {"Host": host})
        message = assert_openai_error(reply, 403, code="host_not_allowed")
        assert repr(host) in message
    assert len(keyless.engine.batches) == batches


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:1"},  # another local web page is another origin too
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"},
    ],
)
def test_without_a_key_cross_site_requests_are_refused(keyless: Served, headers: dict[str, str]) -> None:
    batches = len(keyless.engine.batches)
    for method, path in VALID:
        reply = _call(keyless, method, path, headers)
        assert_openai_error(reply, 403, code="cross_site_request")
    assert len(keyless.engine.batches) == batches  # nothing was generated


def test_without_a_key_same_origin_and_direct_requests_are_served(keyless: Served) -> None:
    own = keyless.url.removeprefix("http://")
    for headers in ({"Sec-Fetch-Site": "none"}, {"Sec-Fetch-Site": "same-origin", "Origin": f"http://{own}"}):
        reply = _call(keyless, "GET", "/generate", headers)
        assert reply.status == 200 and reply.json["text"] == "abc"
