"""The work behind the routes: check requests, turn them into scheduler jobs, wait for or stream their results.

Rendering chat templates and tokenising run on a small thread pool, never on the event loop: a long prompt must not
stall every other connection. Requests that could never be served (more answers than a batch or the queue holds) are
refused with a 400 before any of that work. A client that goes away cancels its jobs: a non-streamed request watches
for the disconnect while it waits, a streamed one notices when its events can no longer be sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import Executor
from typing import Any, TypeVar

from tuneforge.data.messages import Conversation, Message
from tuneforge.serve.catalog import Catalog, UnknownModel
from tuneforge.serve.engines.base import Engine, Job
from tuneforge.serve.protocol import (
    ApiError,
    ChatChunks,
    ChatRequest,
    CompletionRequest,
    SamplingRequest,
    TextChunks,
    ToolChatChunks,
    chat_response,
    error_body,
    text_response,
)
from tuneforge.serve.scheduler import QueueFull, Scheduler, Unservable
from tuneforge.serve.text import Completion

__all__ = ["Service"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
T = TypeVar("T")


class Service:
    """Requests in, answers out, for `catalog`'s models on `engine` through `scheduler`; `pool` tokenises."""

    def __init__(
        self, engine: Engine, catalog: Catalog, scheduler: Scheduler, pool: Executor, default_max_tokens: int
    ) -> None:
        self.engine, self.catalog, self.scheduler, self.pool = engine, catalog, scheduler, pool
        self.default_max_tokens = default_max_tokens

    async def chat(self, body: ChatRequest, receive: Receive) -> Any:
        """A chat completion (or its event stream)."""
        adapter = self.adapter(body.model)
        self.check_fits(body, prompts=1)
        prompt = await self.encode_chat(body.conversation())
        tool_calls = None
        if body.uses_tools():  # how the model writes calls: read from its template once, off the event loop
            tool_calls = await self.off_loop(self.engine.tool_call_pieces, "tools", "cannot read the tool call form")
        if body.stream:
            chunks = ToolChatChunks(body.model, tool_calls) if body.uses_tools() else ChatChunks(body.model)
            return self.stream(body, prompt, adapter, "messages", chunks)
        [answers] = await self.run([self.job(body, prompt, adapter, "messages")], receive)
        return chat_response(body.model, answers, len(prompt), tool_calls)

    async def completions(self, body: CompletionRequest, receive: Receive) -> Any:
        """A text completion of one or more prompts (or the event stream of one)."""
        adapter = self.adapter(body.model)
        texts = body.prompts()
        if body.stream and len(texts) > 1:
            raise ApiError(400, "streaming serves a single prompt: send one prompt per request", param="prompt")
        self.check_fits(body, prompts=len(texts))
        prompts = await self.off_loop(
            lambda: [self.engine.encode_text(text) for text in texts], "prompt", "cannot tokenise the prompt"
        )
        for index, prompt in enumerate(prompts):
            if not prompt:
                raise ApiError(400, f"prompt {index} encodes to no tokens: give some text", param="prompt")
        if body.stream:
            return self.stream(body, prompts[0], adapter, "prompt", TextChunks(body.model))
        results = await self.run([self.job(body, prompt, adapter, "prompt") for prompt in prompts], receive)
        return text_response(body.model, [c for answers in results for c in answers], sum(map(len, prompts)))

    async def simple(self, text: str, max_tokens: int | None, model: str, receive: Receive) -> dict[str, str]:
        """One chat-templated answer to `text`, as {"text", "model", "finish_reason"}."""
        adapter = self.adapter(model)
        prompt = await self.encode_chat(Conversation(messages=[Message("user", text)]))
        job = Job(prompt, self.limit(max_tokens, prompt, "prompt"), adapter)
        [[completion]] = await self.run([job], receive)
        return {"text": completion.text, "model": model, "finish_reason": completion.finish}

    def adapter(self, model: str) -> str | None:
        """The adapter serving `model` (None: the base model); a 404 for a model this server does not have."""
        try:
            return self.catalog.adapter_for(model)
        except UnknownModel:
            served = ", ".join(self.catalog.ids())
            raise ApiError(
                404, f"model {model!r} not found; this server has: {served}", param="model", code="model_not_found"
            ) from None

    def check_fits(self, body: SamplingRequest, prompts: int) -> None:
        """A 400 for a request that could never be served, before any work is spent on it."""
        if body.stream and body.n != 1:
            raise ApiError(400, "streaming serves n=1 only", param="n")
        try:
            self.scheduler.check_fits(body.n, prompts * body.n)
        except Unservable as err:
            raise ApiError(400, str(err), param=err.param) from None

    async def off_loop(self, work: Callable[[], T], param: str, failure: str) -> T:
        """`work()` on the tokenising pool; its errors (no template, text a tokeniser refuses) are 400s."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, work)
        except Exception as err:  # the request's content is what the template or tokeniser refused
            raise ApiError(400, f"{failure}: {type(err).__name__}: {err}", param=param) from None

    async def encode_chat(self, conversation: Conversation) -> list[int]:
        """Token ids of `conversation` rendered with the chat template as in training, off the event loop."""
        failure = "cannot render these messages with the chat template"
        return await self.off_loop(lambda: self.engine.encode_chat(conversation), "messages", failure)

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
        """The scheduler job answering `body` for one prompt."""
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
        """Queue `jobs`: a 429 when the queue is full now, a 503 once the server stops."""
        try:
            self.scheduler.submit(jobs)
        except Unservable as err:
            raise ApiError(400, str(err), param=err.param) from None
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

    async def run(self, jobs: list[Job], receive: Receive) -> list[list[Completion]]:
        """Queue `jobs` and wait for their completions; cancel them when the client disconnects first.

        A generation error becomes a 500 for these jobs only; jobs cancelled by the server stopping, a 503.
        """
        self.submit(jobs)
        answers = asyncio.gather(*(asyncio.wrap_future(job.future) for job in jobs), return_exceptions=True)
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({answers, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not answers.done():
                for job in jobs:
                    job.cancel()
        if not answers.done():
            raise ApiError(499, "the client closed the connection", code="client_closed_request")
        results = answers.result()
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise ApiError(503, "the server is shutting down", "server_error", code="shutting_down")
            if isinstance(result, BaseException):
                message = f"generation failed: {type(result).__name__}: {result}"
                raise ApiError(500, message, "server_error", code="generation_failed")
        return results

    def stream(
        self, body: SamplingRequest, prompt: list[int], adapter: str | None, param: str, chunks: ChatChunks
    ) -> Any:
        """Queue a streamed job and answer with server-sent events ending in `data: [DONE]`."""
        from fastapi.responses import StreamingResponse

        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        job = self.job(body, prompt, adapter, param, emit=lambda text: _deliver(loop, pieces, text))
        job.future.add_done_callback(lambda _: _deliver(loop, pieces, None))
        self.submit([job])
        events = _events(job, pieces, chunks, len(prompt), body.include_usage())
        return StreamingResponse(events, media_type="text/event-stream")


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone away (the body was read already: the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


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
            if (chunk := chunks.piece(piece)) is not None:
                yield _sse(chunk)
        if job.future.cancelled():
            yield _sse(error_body("the server is shutting down", "server_error", None, "shutting_down"))
            return
        try:
            [completion] = job.future.result()
        except Exception as err:
            yield _sse(
                error_body(
                    f"generation failed: {type(err).__name__}: {err}", "server_error", None, "generation_failed"
                )
            )
            return
        for chunk in chunks.closing(completion):
            yield _sse(chunk)
        if include_usage:
            yield _sse(chunks.usage(prompt_tokens, completion))
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"
