"""The FastAPI application: OpenAI-compatible routes over a batching scheduler. No globals: `create_app` builds it.

Routes: GET /health, GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions, POST /v1/completions and
GET /generate?prompt=... (one chat-templated answer as {"text": ...}). /health also reports the scheduler's counters
(requests, batches, largest_batch, cancelled, ...). Every route, /health included, is guarded (see guards.py): with
an API key set, by `Authorization: Bearer <key>` (the counters and model names are not for everyone); without one,
by the Host and origin checks that keep web pages away from a loopback server. Request bodies are limited in size.
Every client error is a 4xx in OpenAI's {"error": {message, type, param, code}} shape, never a 500.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations, and `Request` is imported in
# create_app (fastapi is an optional dependency, imported where it is used), out of reach of string annotations.
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from tuneforge.serve.catalog import Catalog
from tuneforge.serve.engines.base import Engine
from tuneforge.serve.guards import DEFAULT_MAX_BODY_BYTES, RequestGuard
from tuneforge.serve.protocol import ApiError, ChatRequest, CompletionRequest, error_body
from tuneforge.serve.scheduler import Scheduler
from tuneforge.serve.service import Service

__all__ = ["create_app"]


def create_app(
    engine: Engine,
    catalog: Catalog,
    scheduler: Scheduler,
    api_key: str | None = None,
    default_max_tokens: int = 256,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    host: str = "127.0.0.1",
    tokenizer_threads: int = 2,
) -> Any:
    """Build the app serving `catalog`'s models through `scheduler`; the app starts and stops the scheduler.

    `host` is the address the server binds: without `api_key`, requests must name it (or loopback) as their Host.
    `tokenizer_threads` threads render chat templates and tokenise prompts, away from the event loop.
    """
    from fastapi import FastAPI, Query, Request

    pool = ThreadPoolExecutor(tokenizer_threads, thread_name_prefix="tuneforge-tokenize")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        yield
        scheduler.stop()
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="tuneforge", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    _install_error_handlers(app)
    app.add_middleware(RequestGuard, api_key=api_key, max_body_bytes=max_body_bytes, bound_host=host)
    service = Service(engine, catalog, scheduler, pool, default_max_tokens)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": catalog.ids(), "stats": scheduler.snapshot()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(name) for name in catalog.ids()]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict[str, Any]:
        service.adapter(model)
        return _model_card(model)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        return await service.chat(body, request.receive)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await service.completions(body, request.receive)

    @app.get("/generate")
    async def generate(
        prompt: str, request: Request, max_tokens: int | None = Query(None, ge=1), model: str | None = None
    ) -> Any:
        return await service.simple(prompt, max_tokens, model or catalog.default_id(), request.receive)

    return app


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tuneforge"}


def _error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """A JSON error; ASCII-escaped, so that text the client sent (a lone surrogate, say) can always be encoded."""
    from fastapi.responses import Response

    return Response(json.dumps(body), status_code=status, headers=headers, media_type="application/json")


def _install_error_handlers(app: Any) -> None:
    """Every error leaves in OpenAI's format; request validation errors are 400s, not FastAPI's 422."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> Any:
        return _error_response(err.status, err.body(), err.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> Any:
        return _error_response(400, _validation_error(err.errors(), request.headers.get("content-type", "")))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Any:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        message = str(err.detail)
        if err.status_code == 400 and err.__cause__ is not None:  # a body JSON cannot read: too deep, bad UTF-8...
            message = f"the request body cannot be read as JSON: {type(err.__cause__).__name__}: {err.__cause__}"
        elif err.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path} on this server (see GET /v1/models, /health)"
        elif err.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _error_response(err.status_code, error_body(message, kind), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> Any:
        return _error_response(500, error_body(f"internal error: {type(err).__name__}: {err}", "server_error"))


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none"})


def _validation_error(errors: Any, content_type: str = "application/json") -> dict[str, Any]:
    """OpenAI's error body for pydantic's validation errors: the first of our own checks, else the first error."""
    errors = list(errors) or [{"loc": (), "msg": "invalid request", "type": ""}]
    first = next((e for e in errors if e.get("type") == "value_error"), errors[0])
    first = {**first, "msg": str(first.get("msg", "")).removeprefix("Value error, ")}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return error_body(f"the request body is not valid JSON: {detail}".rstrip(": "), "invalid_request_error")
    if tuple(first["loc"]) == ("body",):
        hint = "" if "json" in content_type.lower() else " sent with Content-Type: application/json"
        return error_body(f"the request body must be a JSON object{hint}: {first['msg']}", "invalid_request_error")
    # Leave out the request part and the tags pydantic adds for the member of a union ("str", "list[...]").
    parts = [p for p in first["loc"] if p not in ("body", "query") and p not in _UNION_TAGS and "[" not in str(p)]
    param = ".".join(str(p) for p in parts) or None
    return error_body(f"{param}: {first['msg']}" if param else first["msg"], "invalid_request_error", param)
