"""The batching scheduler: one thread that owns the engine and turns queued jobs into batched generations.

Requests put jobs in a bounded queue. The scheduler thread takes the oldest job, waits up to `batch_wait_s` for
more jobs that can share its batch (same adapter and sampling: see `Job.batch_key`), takes those in arrival order
up to `max_batch_size` answers, and runs them as one generation. Streamed and seeded jobs run alone. A failing
generation fails only the jobs of its batch; the thread goes on with the next one.

Capacity is counted in answers (a job asks for `n`): a job never asks for more answers than one batch holds, and the
queue never holds more than `max_queue` answers, so no request makes a batch larger than `max_batch_size` rows of at
most the context length each. A submission that could never fit is `Unservable` (the client's error); one that does
not fit now is `QueueFull` (try again later). Cancelled jobs (their client went away) leave the queue at once and
free their place; a running batch stops early once every job in it is cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from tuneforge.serve.engines.base import Engine, Job

__all__ = ["QueueFull", "Scheduler", "SchedulerStats", "Unservable"]

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue has no room for these jobs now (it holds up to `max_queue` answers)."""


class Unservable(ValueError):
    """A submission that can never be served: more answers per job than a batch holds or in all than the queue."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class SchedulerStats:
    """Counters since start: jobs answered, failed or cancelled, generations run and the most answers one made."""

    requests: int = 0
    failed: int = 0
    cancelled: int = 0
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

    def check_fits(self, n: int, answers: int) -> None:
        """Raise Unservable unless jobs of `n` answers each, `answers` in all, can ever be served."""
        if n > self.max_batch_size:
            raise Unservable(
                f"n={n} asks for more answers than this server generates together (--max-batch-size "
                f"{self.max_batch_size}); ask for at most {self.max_batch_size} and send more requests",
                "n",
            )
        if answers > self.max_queue:
            raise Unservable(
                f"this request asks for {answers} answers (prompts x n), more than this server queues "
                f"(--max-queue {self.max_queue}); split it into requests of at most {self.max_queue}",
                "prompt",
            )

    def submit(self, jobs: list[Job]) -> None:
        """Queue all of `jobs`, or none of them: raises Unservable when they can never fit, QueueFull when they do
        not fit now, RuntimeError once stopping."""
        self.check_fits(max((job.n for job in jobs), default=1), sum(job.n for job in jobs))
        with self._cond:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            self._prune()
            waiting = self._queued()
            if waiting + sum(job.n for job in jobs) > self.max_queue:
                raise QueueFull(f"{waiting} answers are waiting already (--max-queue {self.max_queue})")
            self._waiting.extend(jobs)
            self._cond.notify_all()

    def snapshot(self) -> dict[str, int]:
        """The counters plus how many answers are waiting now."""
        with self._cond:
            self._prune()
            return {**asdict(self.stats), "queued": self._queued()}

    def _queued(self) -> int:
        return sum(job.n for job in self._waiting)

    def _prune(self) -> None:
        """Drop the waiting jobs that were cancelled (their clients went away), counting them (lock held)."""
        kept = deque(job for job in self._waiting if not job.abandoned)
        if len(kept) != len(self._waiting):
            self.stats.cancelled += len(self._waiting) - len(kept)
            self._waiting = kept

    def _loop(self) -> None:
        while (group := self._next_group()) is not None:
            self._run(group)

    def _next_group(self) -> list[Job] | None:
        """The next batch to run (empty when its jobs were cancelled meanwhile), or None when stopping."""
        with self._cond:
            while True:
                self._prune()
                if self._stopping:
                    return None
                if self._waiting:
                    break
                self._cond.wait()
            key = self._waiting[0].batch_key()
            if key is not None:
                self._gather(key)
            # While `_gather` waited, the lock was free: the server may be stopping, or submit() may have pruned
            # cancelled jobs, the oldest one included.
            return None if self._stopping else self._take()

    def _gather(self, key: tuple[object, ...]) -> None:
        """Wait (with the lock released) until a full batch for `key` is waiting or `batch_wait_s` has passed."""
        deadline = time.monotonic() + self.batch_wait_s
        while self._answers(key) < self.max_batch_size and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _answers(self, key: tuple[object, ...]) -> int:
        return sum(job.n for job in self._waiting if job.batch_key() == key and not job.abandoned)

    def _take(self) -> list[Job]:
        """Remove the oldest job and, for a batchable one, later jobs with its key while the batch has room."""
        self._prune()
        if not self._waiting:
            return []
        first = self._waiting.popleft()
        group, size, key = [first], first.n, first.batch_key()
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
        live = [job for job in group if not job.abandoned and job.future.set_running_or_notify_cancel()]
        if len(live) < len(group):
            with self._cond:
                self.stats.cancelled += len(group) - len(live)
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
            cancelled = sum(job.cancelled.is_set() for job in live)
            stats.cancelled += cancelled
            if failed:
                stats.failed += len(live) - cancelled
            else:
                stats.requests += len(live) - cancelled
