"""The FastAPI application: OpenAI-compatible routes over one engine. No globals: `create_app` builds it."""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from tuneforge.serve.engines import Generation, TransformersEngine
from tuneforge.serve.protocol import ChatRequest, chat_chunk, chat_response, error_body

__all__ = ["create_app"]


def _error(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(error_body(message, kind, param, code), status_code=status)


def create_app(engine: TransformersEngine, model_name: str, api_key: str | None = None, default_max_tokens: int = 256):
    """Build the app serving `engine` under the model id `model_name`; every route checks `api_key` when set."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import StreamingResponse

    app = FastAPI(title="tuneforge", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Any:
        if api_key:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return _error(401, "invalid or missing API key", "invalid_request_error", code="invalid_api_key")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> Any:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return _error(400, f"{param}: {first['msg']}" if param else first["msg"], "invalid_request_error", param)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "tuneforge"}]}

    @app.post("/v1/chat/completions")
    def chat(body: ChatRequest) -> Any:
        if body.model != model_name:
            return _error(
                404,
                f"model {body.model!r} not found; available: {model_name}",
                "invalid_request_error",
                "model",
                "model_not_found",
            )
        prompt = engine.prompt_ids(body.template_messages())
        limit = body.token_limit(default_max_tokens)
        if len(prompt) + limit > engine.context_length:
            return _error(
                400,
                f"prompt ({len(prompt)} tokens) + max_tokens ({limit}) exceeds the context length "
                f"{engine.context_length}",
                "invalid_request_error",
                "messages",
                "context_length_exceeded",
            )
        request = Generation(
            body.template_messages(), limit, body.temperature, body.top_p, tuple(body.stops()), body.seed
        )
        if body.stream:
            return StreamingResponse(_sse(engine, request, prompt, model_name), media_type="text/event-stream")
        text = "".join(engine.stream(request, prompt))
        completion = engine.count_tokens(text)
        finish = "length" if completion >= limit else "stop"
        return chat_response(model_name, text, finish, len(prompt), completion)

    return app


def _sse(engine: TransformersEngine, request: Generation, prompt: list[int], model: str) -> Iterator[str]:
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    yield f"data: {json.dumps(chat_chunk(ident, created, model, {'role': 'assistant', 'content': ''}, None))}\n\n"
    pieces = []
    for piece in engine.stream(request, prompt):
        if piece:
            pieces.append(piece)
            yield f"data: {json.dumps(chat_chunk(ident, created, model, {'content': piece}, None))}\n\n"
    finish = "length" if engine.count_tokens("".join(pieces)) >= request.max_new_tokens else "stop"
    yield f"data: {json.dumps(chat_chunk(ident, created, model, {}, finish))}\n\n"
    yield "data: [DONE]\n\n"
