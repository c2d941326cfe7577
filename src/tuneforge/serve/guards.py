"""What every HTTP request must pass before the app sees it: who may ask, and how much it may send.

`RequestGuard` is a plain ASGI middleware (the outermost layer of the app), so a refused request costs no parsing:

- With an API key, every route needs `Authorization: Bearer <key>` (the scheme in any case; a bare key is refused).
  Keys are compared as SHA-256 digests with `hmac.compare_digest`: constant time, whatever their lengths.
- Without a key (the server is on loopback then), the `Host` header must name this machine (localhost, 127.0.0.1,
  [::1], with any port, or the bound host): a web page whose domain was re-pointed at 127.0.0.1 (DNS rebinding)
  sends its own domain as Host and is refused. Browsers may not reach any route from another origin either (CSRF,
  e.g. an `<img src=".../generate?prompt=...">` on some web page): a `Sec-Fetch-Site` other than same-origin/none,
  or an `Origin` other than the server's own, is refused.
- The request body may hold at most `max_body_bytes` bytes: a larger `Content-Length` is refused before anything is
  read, and a body without one (chunked) is counted as it arrives and refused once it passes the limit, so no more
  than the limit is ever held in memory.

Refusals are 4xx answers in OpenAI's error shape, and close the connection (the body may be unread).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tuneforge.serve.protocol import error_body

__all__ = ["DEFAULT_MAX_BODY_BYTES", "LOOPBACK_NAMES", "Refusal", "RequestGuard", "bearer_token", "host_name"]

DEFAULT_MAX_BODY_BYTES = 1 << 20
"""1 MiB: about 250,000 tokens of text, more than a 128k-token context takes, and a small cost per request."""

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def host_name(value: str) -> str | None:
    """The host of a `Host` header value (lower case, IPv6 without brackets); None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name or None


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (scheme in any case); None for anything else."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Refusal(Exception):
    """A request that is answered with `status` and an OpenAI error body, and never reaches the app."""

    def __init__(self, status: int, message: str, kind: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.body, self.headers = status, error_body(message, kind, None, code), headers or {}


class RequestGuard:
    """ASGI middleware: the API key or the Host/origin checks, then the body size limit (see the module doc)."""

    def __init__(self, app: App, api_key: str | None, max_body_bytes: int, bound_host: str = "127.0.0.1") -> None:
        self.app = app
        self.key_digest = hashlib.sha256(api_key.encode()).digest() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.hosts = LOOPBACK_NAMES | {bound_host.strip("[]").lower()}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no route takes one: refuse before anything can reach the app
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        try:
            headers = _headers(scope)
            if self.key_digest is not None:
                self._check_key(headers.get("authorization", []))
            else:
                self._check_host(headers.get("host", []))
                self._check_origin(headers)
            body = await self._read_body(headers.get("content-length", []), receive)
        except Refusal as refusal:
            await _refuse(send, refusal)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_key(self, values: list[str]) -> None:
        token = bearer_token(values[0]) if len(values) == 1 else None
        given = hashlib.sha256((token or "").encode()).digest()
        if token is None or not hmac.compare_digest(given, self.key_digest or b""):
            raise Refusal(
                401,
                "invalid or missing API key: send the header `Authorization: Bearer <key>`",
                "invalid_request_error",
                "invalid_api_key",
                {"WWW-Authenticate": "Bearer"},
            )

    def _check_host(self, values: list[str]) -> None:
        name = host_name(values[0]) if len(values) == 1 else None
        if name not in self.hosts:
            shown = ", ".join(repr(v) for v in values) or "none"
            raise Refusal(
                403,
                f"this server answers only requests addressed to this machine (Host header: {shown}); "
                "to serve other names, bind an address with --host and set an API key",
                "permission_error",
                "host_not_allowed",
            )

    def _check_origin(self, headers: dict[str, list[str]]) -> None:
        site = headers.get("sec-fetch-site", ["none"])[-1].strip().lower()
        origins = headers.get("origin", [])
        own = {f"{scheme}://{host}" for host in headers.get("host", []) for scheme in ("http", "https")}
        if site not in ("same-origin", "none") or any(origin.strip().lower() not in own for origin in origins):
            raise Refusal(
                403,
                "cross-site requests are refused: web pages of other origins may not use this server without an "
                "API key",
                "permission_error",
                "cross_site_request",
            )

    async def _read_body(self, lengths: list[str], receive: Receive) -> list[Message]:
        """The request's body messages, read up to the limit; Refusal when it is larger or malformed."""
        if len(lengths) > 1 or (lengths and not lengths[0].strip().isdigit()):
            raise Refusal(400, "malformed Content-Length header", "invalid_request_error", "invalid_request")
        if lengths and int(lengths[0]) > self.max_body_bytes:
            raise self._too_large()
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                raise self._too_large()
            if not message.get("more_body", False):
                return messages

    def _too_large(self) -> Refusal:
        return Refusal(
            413,
            f"the request body is larger than this server accepts ({self.max_body_bytes} bytes, "
            "tuneforge serve --max-body-bytes)",
            "invalid_request_error",
            "request_too_large",
        )


def _headers(scope: MutableMapping[str, Any]) -> dict[str, list[str]]:
    """Each header's values by lower-case name (latin-1, as HTTP/1.1 sends them)."""
    headers: dict[str, list[str]] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return headers


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that first hands out the body messages already read (joined into one), then the real ones."""
    if messages[-1]["type"] != "http.request":  # the client left before its body was complete
        pending = [messages[-1]]
    else:
        pending = [{"type": "http.request", "body": b"".join(m.get("body", b"") for m in messages)}]

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _refuse(send: Send, refusal: Refusal) -> None:
    payload = json.dumps(refusal.body).encode()
    headers = {"content-type": "application/json", "content-length": str(len(payload)), "connection": "close"}
    headers.update({name.lower(): value for name, value in refusal.headers.items()})
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": payload})
