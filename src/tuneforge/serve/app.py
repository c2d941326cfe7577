"""The FastAPI application: OpenAI-compatible routes over a batching scheduler. No globals: `create_app` builds it.

Routes: GET /health, GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions, POST /v1/completions and
GET /generate?prompt=... (one chat-templated answer as {"text": ...}). /health also reports the scheduler's counters
(requests, batches, largest_batch, ...). Every route, /health included, checks the API key when one is set: the
counters and model names are not for everyone. Errors use OpenAI's {"error": {message, type, param, code}} shape.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from tuneforge.serve.catalog import Catalog, UnknownModel
from tuneforge.serve.engines.base import Engine, Job
from tuneforge.serve.protocol import (
    ApiError,
    ChatChunks,
    ChatRequest,
    CompletionRequest,
    SamplingRequest,
    TextChunks,
    chat_response,
    error_body,
    text_response,
)
from tuneforge.serve.scheduler import QueueFull, Scheduler
from tuneforge.serve.text import Completion

__all__ = ["create_app"]


def create_app(
    engine: Engine, catalog: Catalog, scheduler: Scheduler, api_key: str | None = None, default_max_tokens: int = 256
) -> Any:
    """Build the app serving `catalog`'s models through `scheduler`; the app starts and stops the scheduler."""
    from fastapi import FastAPI, Query

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(title="tuneforge", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    _install_error_handlers(app)
    _install_key_check(app, api_key)
    service = _Service(engine, catalog, scheduler, default_max_tokens)

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
    async def chat(body: ChatRequest) -> Any:
        return await service.chat(body)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        return await service.completions(body)

    @app.get("/generate")
    async def generate(prompt: str, max_tokens: int | None = Query(None, ge=1), model: str | None = None) -> Any:
        return await service.simple(prompt, max_tokens, model or catalog.default_id())

    return app


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tuneforge"}


class _Service:
    """The work behind the routes: validate, turn requests into jobs, wait for or stream their results."""

    def __init__(self, engine: Engine, catalog: Catalog, scheduler: Scheduler, default_max_tokens: int) -> None:
        self.engine, self.catalog, self.scheduler = engine, catalog, scheduler
        self.default_max_tokens = default_max_tokens

    async def chat(self, body: ChatRequest) -> Any:
        adapter = self.adapter(body.model)
        prompt = self.encode_chat(body.template_messages())
        if body.stream:
            return self.stream(body, prompt, adapter, "messages", ChatChunks(body.model))
        [answers] = await self.run([self.job(body, prompt, adapter, "messages")])
        return chat_response(body.model, answers, len(prompt))

    async def completions(self, body: CompletionRequest) -> Any:
        adapter = self.adapter(body.model)
        prompts = [self.engine.encode_text(text) for text in body.prompts()]
        if not prompts or (body.stream and len(prompts) > 1):
            raise ApiError(400, "give one prompt (streaming serves a single prompt)", param="prompt")
        if body.stream:
            return self.stream(body, prompts[0], adapter, "prompt", TextChunks(body.model))
        results = await self.run([self.job(body, prompt, adapter, "prompt") for prompt in prompts])
        return text_response(body.model, [c for answers in results for c in answers], sum(map(len, prompts)))

    async def simple(self, text: str, max_tokens: int | None, model: str) -> dict[str, str]:
        adapter = self.adapter(model)
        prompt = self.encode_chat([{"role": "user", "content": text}])
        job = Job(prompt, self.limit(max_tokens, prompt, "prompt"), adapter)
        [[completion]] = await self.run([job])
        return {"text": completion.text, "model": model, "finish_reason": completion.finish}

    def adapter(self, model: str) -> str | None:
        try:
            return self.catalog.adapter_for(model)
        except UnknownModel:
            served = ", ".join(self.catalog.ids())
            raise ApiError(
                404, f"model {model!r} not found; this server has: {served}", param="model", code="model_not_found"
            ) from None

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        try:
            return self.engine.encode_chat(messages)
        except Exception as err:  # template errors (no template, unsupported roles) are the request's fault
            raise ApiError(
                400, f"cannot render these messages with the chat template: {err}", param="messages"
            ) from None

    def limit(self, requested: int | None, prompt: list[int], param: str) -> int:
        """The answer's token limit: as requested, or the default shortened to the room the context leaves."""
        context = self.engine.context_length
        if requested is not None and requested > context:
            raise ApiError(400, f"max_tokens must be at most the context length {context}", param="max_tokens")
        room = context - len(prompt)
        if room < 1 or (requested is not None and requested > room):
            asked = "" if requested is None else f" plus max_tokens ({requested})"
            message = f"the prompt ({len(prompt)} tokens){asked} exceeds this model's context length of {context}"
            raise ApiError(400, message, param=param, code="context_length_exceeded")
        return requested or min(self.default_max_tokens, room)

    def job(
        self,
        body: SamplingRequest,
        prompt: list[int],
        adapter: str | None,
        param: str,
        emit: Callable[[str], None] | None = None,
    ) -> Job:
        return Job(
            prompt=prompt,
            max_tokens=self.limit(body.requested_tokens(), prompt, param),
            adapter=adapter,
            n=body.n,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stops=body.stops(),
            ignore_eos=body.ignore_eos,
            emit=emit,
        )

    def submit(self, jobs: list[Job]) -> None:
        try:
            self.scheduler.submit(jobs)
        except QueueFull as err:
            raise ApiError(
                429,
                f"server busy: {err}; retry shortly",
                "rate_limit_error",
                None,
                "rate_limit_exceeded",
                {"Retry-After": "1"},
            ) from None
        except RuntimeError as err:
            raise ApiError(503, str(err), "server_error", code="shutting_down") from None

    async def run(self, jobs: list[Job]) -> list[list[Completion]]:
        """Queue `jobs` and wait for their completions (a generation error becomes a 500 for these jobs only)."""
        self.submit(jobs)
        try:
            return list(await asyncio.gather(*(asyncio.wrap_future(job.future) for job in jobs)))
        except Exception as err:
            raise ApiError(
                500, f"generation failed: {type(err).__name__}: {err}", "server_error", code="generation_failed"
            ) from None

    def stream(
        self, body: SamplingRequest, prompt: list[int], adapter: str | None, param: str, chunks: ChatChunks
    ) -> Any:
        """Queue a streamed job and answer with server-sent events ending in `data: [DONE]`."""
        from fastapi.responses import StreamingResponse

        if body.n != 1:
            raise ApiError(400, "streaming serves n=1 only", param="n")
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        job = self.job(body, prompt, adapter, param, emit=lambda text: _deliver(loop, pieces, text))
        job.future.add_done_callback(lambda _: _deliver(loop, pieces, None))
        self.submit([job])
        events = _events(job, pieces, chunks, len(prompt), body.include_usage())
        return StreamingResponse(events, media_type="text/event-stream")


def _deliver(loop: asyncio.AbstractEventLoop, pieces: asyncio.Queue[str | None], item: str | None) -> None:
    """Hand a text piece (None: the end) from the scheduler thread to the event loop."""
    try:
        loop.call_soon_threadsafe(pieces.put_nowait, item)
    except RuntimeError:  # the event loop has closed: nobody is listening any more
        pass


async def _events(
    job: Job, pieces: asyncio.Queue[str | None], chunks: ChatChunks, prompt_tokens: int, include_usage: bool
) -> AsyncIterator[str]:
    """The SSE events of a streamed job; a client that goes away cancels the job."""
    try:
        for chunk in chunks.opening():
            yield _sse(chunk)
        while (piece := await pieces.get()) is not None:
            yield _sse(chunks.piece(piece))
        try:
            [completion] = job.future.result()
        except Exception as err:
            yield _sse(
                error_body(
                    f"generation failed: {type(err).__name__}: {err}", "server_error", None, "generation_failed"
                )
            )
            return
        yield _sse(chunks.closing(completion))
        if include_usage:
            yield _sse(chunks.usage(prompt_tokens, completion))
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()
        job.future.cancel()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)


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
        return _error_response(400, _validation_error(err.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Any:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return _error_response(err.status_code, error_body(str(err.detail), kind), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> Any:
        return _error_response(500, error_body(f"internal error: {type(err).__name__}: {err}", "server_error"))


def _validation_error(errors: Any) -> dict[str, Any]:
    """OpenAI's error body for the first of pydantic's validation errors."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return error_body(f"the request body is not valid JSON: {detail}".rstrip(": "), "invalid_request_error")
    if tuple(first["loc"]) == ("body",):
        return error_body(f"the request body must be a JSON object: {first['msg']}", "invalid_request_error")
    param = ".".join(str(p) for p in first["loc"] if p not in ("body", "query")) or None
    return error_body(f"{param}: {first['msg']}" if param else first["msg"], "invalid_request_error", param)


def _install_key_check(app: Any, api_key: str | None) -> None:
    """With `api_key` set, every route needs `Authorization: Bearer <key>` (compared in constant time)."""
    if not api_key:
        return
    from fastapi import Request

    expected = api_key.encode()

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Any:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected):
            body = error_body("invalid or missing API key", "invalid_request_error", code="invalid_api_key")
            return _error_response(401, body)
        return await call_next(request)
