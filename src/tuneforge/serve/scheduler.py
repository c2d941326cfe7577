"""The batching scheduler: one thread that owns the engine and turns queued jobs into batched generations.

Requests put jobs in a bounded queue. The scheduler thread takes the oldest job, waits up to `batch_wait_s` for
more jobs that can share its batch (same adapter and sampling: see `Job.batch_key`), takes those in arrival order
up to `max_batch_size` answers, and runs them as one generation. Streamed and seeded jobs run alone. A failing
generation fails only the jobs of its batch; the thread goes on with the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from tuneforge.serve.engines.base import Engine, Job

__all__ = ["QueueFull", "Scheduler", "SchedulerStats"]

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds `max_queue` waiting jobs already."""


@dataclass
class SchedulerStats:
    """Counters since start: jobs answered or failed, generations run and the most answers one of them made."""

    requests: int = 0
    failed: int = 0
    batches: int = 0
    largest_batch: int = 0
    answers: int = 0


class Scheduler:
    """Queue jobs for `engine` and run them in batches on one background thread."""

    def __init__(self, engine: Engine, max_batch_size: int = 8, batch_wait_s: float = 0.01, max_queue: int = 64):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.max_queue = max_queue
        self.stats = SchedulerStats()
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the scheduler thread."""
        self._thread = threading.Thread(target=self._loop, name="tuneforge-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs, let the running batch finish, and cancel the jobs still waiting."""
        with self._cond:
            self._stopping = True
            waiting, self._waiting = list(self._waiting), deque()
            self._cond.notify_all()
        for job in waiting:
            job.future.cancel()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, jobs: list[Job]) -> None:
        """Queue all of `jobs`, or none of them: raises QueueFull when they do not fit."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting already (--max-queue {self.max_queue})")
            self._waiting.extend(jobs)
            self._cond.notify_all()

    def snapshot(self) -> dict[str, int]:
        """The counters plus how many jobs are waiting now."""
        with self._cond:
            return {**asdict(self.stats), "queued": len(self._waiting)}

    def _loop(self) -> None:
        while (group := self._next_group()) is not None:
            self._run(group)

    def _next_group(self) -> list[Job] | None:
        """The next batch to run, or None when stopping."""
        with self._cond:
            while not self._waiting and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            key = self._waiting[0].batch_key()
            if key is not None:
                self._gather(key)
            return self._take(key)

    def _gather(self, key: tuple[object, ...]) -> None:
        """Wait (with the lock released) until a full batch for `key` is waiting or `batch_wait_s` has passed."""
        deadline = time.monotonic() + self.batch_wait_s
        while self._answers(key) < self.max_batch_size and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _answers(self, key: tuple[object, ...]) -> int:
        return sum(job.n for job in self._waiting if job.batch_key() == key)

    def _take(self, key: tuple[object, ...] | None) -> list[Job]:
        """Remove the oldest job and, for a batchable one, later jobs with its key while the batch has room."""
        first = self._waiting.popleft()
        group, size = [first], first.n
        if key is None:
            return group
        for job in list(self._waiting):
            if job.batch_key() == key and size + job.n <= self.max_batch_size:
                self._waiting.remove(job)
                group.append(job)
                size += job.n
        return group

    def _run(self, group: list[Job]) -> None:
        """Run one batch and deliver each job its result; an error fails this batch's jobs only."""
        live = [job for job in group if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        answers = sum(job.n for job in live)
        log.debug("batch of %d answers for %d requests (adapter %s)", answers, len(live), live[0].adapter)
        try:
            results = [[self.engine.stream(live[0])]] if live[0].emit else self.engine.generate(live)
        except Exception as err:  # a failing generation must not stop the scheduler
            log.exception("generation failed for %d requests", len(live))
            self._count(live, answers, failed=True)
            for job in live:
                job.future.set_exception(err)
            return
        self._count(live, answers, failed=False)
        for job, result in zip(live, results, strict=True):
            job.future.set_result(result)

    def _count(self, live: list[Job], answers: int, failed: bool) -> None:
        with self._cond:
            stats = self.stats
            stats.batches += 1
            stats.answers += answers
            stats.largest_batch = max(stats.largest_batch, answers)
            if failed:
                stats.failed += len(live)
            else:
                stats.requests += len(live)
