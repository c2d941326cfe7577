"""An OpenAI-compatible judge endpoint: which URLs may be called, and a client that keeps its API key in place.

The key (TUNEFORGE_JUDGE_API_KEY) is sent only where the caller says the URL is trusted (it was named on the
command line or in TUNEFORGE_JUDGE_URL, never only in a config file); redirects are refused rather than followed,
so the Authorization header never reaches a second host; a URL off this machine needs an explicit opt-in.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.message import Message
from typing import IO, Any

from tuneforge.errors import UserError

__all__ = ["KEY_ENV", "URL_ENV", "check_endpoint_url", "chat_completions_url", "endpoint_asker", "looks_like_url"]

KEY_ENV = "TUNEFORGE_JUDGE_API_KEY"
URL_ENV = "TUNEFORGE_JUDGE_URL"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def looks_like_url(judge: str) -> bool:
    """True for anything written as `scheme://...` (a judge endpoint), False for a model name or path."""
    return bool(_SCHEME.match(judge))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name is not resolved here: it could point anywhere


def check_endpoint_url(url: str, allow_remote: bool, where: str) -> bool:
    """Refuse a judge URL that is not http(s), has no host, or leaves this machine without `allow_remote`.

    Returns whether the host is loopback. `where` names the setting the URL came from, for the messages.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise UserError(f"{where}: judge endpoint {url!r} must be an http:// or https:// URL")
    try:
        host, _ = parts.hostname, parts.port
    except ValueError as err:
        raise UserError(f"{where}: judge endpoint {url!r} is not a valid URL ({err})") from None
    if not host:
        raise UserError(f"{where}: judge endpoint {url!r} has no host; write it as http://host:port/v1")
    loopback = _is_loopback(host)
    if not loopback and not allow_remote:
        raise UserError(
            f"{where}: judge endpoint host {host!r} is not on this machine, and the questions and answers would be "
            "sent there; allow it with eval.judge_remote: true (or --judge-remote), or use a local endpoint "
            "(127.0.0.1)"
        )
    return loopback


def chat_completions_url(url: str) -> str:
    """The chat completions route under a base URL given as http://host:port or http://host:port/v1."""
    base = url.rstrip("/")
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would carry the Authorization header to wherever it points."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Message, newurl: str
    ) -> urllib.request.Request | None:
        fp.close()
        raise UserError(
            f"judge endpoint {req.full_url} answered with a redirect ({code}) to {newurl}; tuneforge does not "
            "follow redirects for the judge (its API key would go along): give the final URL with --judge"
        )


def _opener(loopback: bool) -> urllib.request.OpenerDirector:
    # a loopback endpoint is never reached through a proxy from the environment (it would see the key)
    proxies = urllib.request.ProxyHandler({}) if loopback else urllib.request.ProxyHandler()
    return urllib.request.build_opener(proxies, _RefuseRedirects)


def endpoint_asker(url: str, model: str, api_key: str | None, loopback: bool) -> Callable[[list[str]], list[str]]:
    """A function sending each prompt to the endpoint's chat completions route; `api_key` goes in a Bearer header."""
    endpoint = chat_completions_url(url)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    opener = _opener(loopback)

    def one(prompt: str) -> str:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 8}
        request = urllib.request.Request(endpoint, json.dumps(body).encode(), headers, method="POST")
        try:
            with opener.open(request, timeout=120) as response:
                reply: Any = json.loads(response.read())
            return reply["choices"][0]["message"]["content"] or ""
        except urllib.error.HTTPError as err:
            hint = f" (check {KEY_ENV})" if err.code in (401, 403) else ""
            raise UserError(f"judge endpoint {endpoint} answered HTTP {err.code} {err.reason}{hint}") from None
        except (urllib.error.URLError, KeyError, IndexError, TypeError, json.JSONDecodeError, TimeoutError) as err:
            raise UserError(f"judge endpoint {endpoint} failed: {err}; check the judge URL and the server") from None

    return lambda prompts: [one(p) for p in prompts]
