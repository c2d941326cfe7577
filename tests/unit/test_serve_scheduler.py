"""The batching scheduler with an echo engine: which jobs share a batch, the bounded queue, failures kept local."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tuneforge.data.messages import Conversation
from tuneforge.serve.engines.base import Engine, Job, Tokens
from tuneforge.serve.scheduler import QueueFull, Scheduler, Unservable

BOOM = 999  # a prompt token that makes EchoEngine fail


class EchoEngine(Engine):
    """Answers each prompt with its own tokens (letters a-z); records each batch; `gate` can hold generation."""

    context_length = 64
    adapter_names = ("x",)

    def __init__(self) -> None:
        self.batches: list[list[Job]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def encode_chat(self, conversation: Conversation) -> list[int]:
        return self.encode_text(conversation.messages[-1].content)

    def encode_text(self, text: str) -> list[int]:
        return [BOOM] if text == "boom" else [ord(c) - ord("a") for c in text if c.isalpha()]

    def decode(self, tokens: list[int]) -> str:
        return "".join(chr(ord("a") + t % 26) for t in tokens)

    def generate_tokens(self, jobs: list[Job]) -> list[list[Tokens]]:
        self._enter(jobs)
        return [[(job.prompt[: job.max_tokens], len(job.prompt) <= job.max_tokens)] * job.n for job in jobs]

    def stream_tokens(self, job: Job, take: Callable[[int], bool]) -> bool:
        self._enter([job])
        for token in job.prompt[: job.max_tokens]:
            if not take(token):
                return False
        return len(job.prompt) <= job.max_tokens

    def _enter(self, jobs: list[Job]) -> None:
        self.entered.set()
        self.gate.wait(30)
        self.batches.append(jobs)
        if any(BOOM in job.prompt for job in jobs):
            raise RuntimeError("boom")


@pytest.fixture
def engine() -> EchoEngine:
    return EchoEngine()


@pytest.fixture
def scheduler(engine: EchoEngine) -> Iterator[Scheduler]:
    made = Scheduler(engine, max_batch_size=3, batch_wait_s=0.01, max_queue=8)
    yield made
    made.stop()


def _job(text: str = "abc", **options: object) -> Job:
    return Job([ord(c) - ord("a") for c in text], max_tokens=8, **options)  # type: ignore[arg-type]


def _answers(jobs: list[Job]) -> list[list[str]]:
    return [[c.text for c in job.future.result(timeout=30)] for job in jobs]


def test_jobs_with_the_same_adapter_and_sampling_share_batches_in_arrival_order(
    engine: EchoEngine, scheduler: Scheduler
) -> None:
    jobs = [_job("ab"), _job("cd", adapter="x"), _job("ef"), _job("gh", temperature=0.7), _job("ij"), _job("kl")]
    scheduler.submit(jobs)
    scheduler.start()
    assert _answers(jobs) == [["ab"], ["cd"], ["ef"], ["gh"], ["ij"], ["kl"]]
    assert [[job.prompt for job in batch] for batch in engine.batches] == [
        [[0, 1], [4, 5], [8, 9]],
        [[2, 3]],
        [[6, 7]],
        [[10, 11]],
    ]


def test_answers_count_towards_the_batch_size_and_seeded_or_streamed_jobs_run_alone(
    engine: EchoEngine, scheduler: Scheduler
) -> None:
    pieces: list[str] = []
    jobs = [_job(n=2), _job(n=2), _job(seed=1), _job(seed=1), _job("abcd", emit=pieces.append)]
    scheduler.submit(jobs)
    scheduler.start()
    assert _answers(jobs) == [["abc", "abc"], ["abc", "abc"], ["abc"], ["abc"], ["abcd"]]
    assert [len(batch) for batch in engine.batches] == [1, 1, 1, 1, 1]
    assert "".join(pieces) == "abcd"
    assert scheduler.snapshot() == {
        "requests": 5,
        "failed": 0,
        "cancelled": 0,
        "batches": 5,
        "largest_batch": 2,
        "answers": 7,
        "queued": 0,
    }


def test_each_job_keeps_its_own_token_limit(scheduler: Scheduler) -> None:
    short, long = Job([0, 1, 2, 3], max_tokens=2), Job([0, 1, 2, 3], max_tokens=8)
    scheduler.submit([short, long])
    scheduler.start()
    assert [c.finish for c in short.future.result(timeout=30) + long.future.result(timeout=30)] == ["length", "stop"]
    assert _answers([short, long]) == [["ab"], ["abcd"]]


def test_a_full_queue_refuses_a_whole_submission(scheduler: Scheduler) -> None:
    scheduler.submit([_job() for _ in range(7)])
    with pytest.raises(QueueFull):
        scheduler.submit([_job(), _job()])
    scheduler.submit([_job()])
    assert scheduler.snapshot()["queued"] == 8


def test_a_failing_batch_fails_its_jobs_only_and_the_scheduler_goes_on(
    engine: EchoEngine, scheduler: Scheduler
) -> None:
    bad, good = Job([BOOM], 4, adapter="x"), _job()
    scheduler.submit([bad, good])
    scheduler.start()
    with pytest.raises(RuntimeError, match="boom"):
        bad.future.result(timeout=30)
    assert _answers([good]) == [["abc"]]
    later = _job("xyz")
    scheduler.submit([later])
    assert _answers([later]) == [["xyz"]]
    stats = scheduler.snapshot()
    assert stats["failed"] == 1 and stats["requests"] == 2


def test_cancelled_jobs_are_skipped_and_stop_cancels_waiting_ones(engine: EchoEngine, scheduler: Scheduler) -> None:
    cancelled, kept = _job("ab"), _job("cd")
    scheduler.submit([cancelled, kept])
    cancelled.future.cancel()
    scheduler.start()
    assert _answers([kept]) == [["cd"]]
    assert [job.prompt for batch in engine.batches for job in batch] == [[2, 3]]
    engine.gate.clear()
    engine.entered.clear()
    running, waiting = _job("ef", seed=1), _job("gh")
    scheduler.submit([running, waiting])
    assert engine.entered.wait(30)
    stopper = threading.Thread(target=scheduler.stop)
    stopper.start()
    deadline = time.monotonic() + 30
    while not waiting.future.cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.gate.set()
    stopper.join(30)
    assert _answers([running]) == [["ef"]] and waiting.future.cancelled()


def test_the_queue_counts_answers_and_refuses_what_could_never_fit(scheduler: Scheduler) -> None:
    with pytest.raises(Unservable, match="--max-batch-size 3") as too_wide:
        scheduler.submit([_job(n=4)])
    assert too_wide.value.param == "n"
    with pytest.raises(Unservable, match="9 answers") as too_many:
        scheduler.submit([_job(n=3), _job(n=3), _job(n=3)])
    assert too_many.value.param == "prompt"
    scheduler.submit([_job(n=3), _job(n=3)])
    with pytest.raises(QueueFull, match="6 answers are waiting"):
        scheduler.submit([_job(n=3)])
    scheduler.submit([_job(n=2)])
    assert scheduler.snapshot()["queued"] == 8


def test_cancelled_waiting_jobs_free_their_place_at_once(engine: EchoEngine, scheduler: Scheduler) -> None:
    jobs = [_job(text) for text in ("ab", "cd", "ef", "gh", "ij", "kl", "mn", "op")]
    scheduler.submit(jobs)
    with pytest.raises(QueueFull):
        scheduler.submit([_job("qr")])
    for job in jobs[::2]:
        job.cancel()
    later = [_job(text) for text in ("qr", "st", "uv", "wx")]
    scheduler.submit(later)
    snapshot = scheduler.snapshot()
    assert (snapshot["queued"], snapshot["cancelled"]) == (8, 4)
    scheduler.start()
    assert _answers(jobs[1::2] + later) == [[t] for t in ("cd", "gh", "kl", "op", "qr", "st", "uv", "wx")]
    ran = [engine.decode(job.prompt) for batch in engine.batches for job in batch]
    assert sorted(ran) == ["cd", "gh", "kl", "op", "qr", "st", "uv", "wx"]
    assert scheduler.snapshot()["requests"] == 8 and scheduler.snapshot()["cancelled"] == 4


def test_a_job_cancelled_while_it_runs_is_counted_as_cancelled(engine: EchoEngine, scheduler: Scheduler) -> None:
    engine.gate.clear()
    running = _job("abc")
    scheduler.submit([running])
    scheduler.start()
    assert engine.entered.wait(30)
    running.cancel()  # too late to skip it: the engine is told through `cancelled`
    assert running.cancelled.is_set() and not running.future.cancelled()
    engine.gate.set()
    assert _answers([running]) == [["abc"]]
    stats = scheduler.snapshot()
    assert (stats["cancelled"], stats["requests"], stats["batches"]) == (1, 0, 1)


def test_jobs_cancelled_or_a_stop_while_a_batch_gathers_leave_the_thread_running(
    engine: EchoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashes: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_value))
    scheduler = Scheduler(engine, max_batch_size=4, batch_wait_s=0.3, max_queue=8)
    scheduler.start()
    alone = _job("ab")
    scheduler.submit([alone])  # the thread now waits up to 0.3 s for more jobs of its kind
    alone.cancel()
    assert scheduler.snapshot()["queued"] == 0  # pruned while the batch gathers: nothing left to take
    gone, kept = _job("cd"), _job("ef")
    scheduler.submit([gone])
    gone.cancel()
    scheduler.submit([kept])  # prunes `gone`, the oldest job of the gathering batch
    assert _answers([kept]) == [["ef"]]
    last = _job("gh")
    scheduler.submit([last])
    scheduler.stop()  # while `last` gathers
    assert last.future.cancelled() and crashes == []
    assert [engine.decode(job.prompt) for batch in engine.batches for job in batch] == ["ef"]
    assert scheduler.snapshot()["cancelled"] == 2
