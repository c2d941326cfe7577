"""Commands the page starts: `tuneforge train`, `compare`, `export`, `serve`, each its own process.

A job runs an argument list (never a shell string) in the workspace folder, in its own session, its output
(stdout and stderr together) pumped by a thread into a clean log file (`.webui/jobs/<id>/log.txt`) and a tail
kept in memory. The manager lives as long as the server, not the page: a reloaded page asks it for the latest
job and shows it again. Stop sends SIGINT, which `tuneforge train` answers by saving a checkpoint at the end of
the current step; a second Stop interrupts at once, a third kills.
"""

from __future__ import annotations

import codecs
import collections
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.atomic import atomic_write_text
from tuneforge.errors import UserError
from tuneforge.webui.terminal import Progress, TerminalText, find_progress

__all__ = ["CHILD_ENV", "Job", "JobManager", "JobView"]

# rich draws its live progress bars only on a terminal: these make it draw them into our pipe (no colours)
CHILD_ENV = {
    "TTY_COMPATIBLE": "1",
    "TTY_INTERACTIVE": "1",
    "NO_COLOR": "1",
    "COLUMNS": "160",
    "PYTHONUNBUFFERED": "1",
    "PYTHONIOENCODING": "utf-8",
    "GRADIO_ANALYTICS_ENABLED": "False",
}
_TAIL = 2000


@dataclass(frozen=True)
class JobView:
    """A snapshot of a job for the page."""

    id: str
    kind: str
    target: str
    state: str  # running, stopping, finished, failed, stopped
    returncode: int | None
    progress: Progress | None
    log: str
    started: float
    ended: float | None
    command: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.state in ("running", "stopping")


class Job:
    """One running (or ended) command and what it printed."""

    def __init__(
        self, job_id: str, kind: str, argv: list[str], cwd: Path, folder: Path, target: str,
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        if isinstance(argv, str | bytes) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("a job runs an argument list of strings")
        self.id, self.kind, self.argv, self.cwd, self.target = job_id, kind, list(argv), cwd, target
        self.folder = folder
        self.log_path = folder / "log.txt"
        self.lock = threading.Lock()
        self.terminal = TerminalText()
        self.lines: collections.deque[str] = collections.deque(maxlen=_TAIL)
        self.stops = 0
        self.progress: Progress | None = None  # the last progress bar the command drew
        self.bars: dict[str, Progress] = {}  # the last state of each bar, by its label
        self.started = time.time()
        self.ended: float | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CHILD_ENV, **(env or {})},
            start_new_session=os.name == "posix",  # the page's Ctrl-C is not the job's: Stop decides
        )
        self._record()
        self.pump = threading.Thread(target=self._pump, name=f"job-{job_id}", daemon=True)
        self.pump.start()

    def _record(self) -> None:
        record = {
            "id": self.id,
            "kind": self.kind,
            "argv": self.argv,
            "cwd": str(self.cwd),
            "target": self.target,
            "pid": self.process.pid,
            "started": self.started,
            "ended": self.ended,
            "returncode": self.process.returncode,
        }
        atomic_write_text(self.folder / "job.json", json.dumps(record, indent=2))

    def _pump(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        assert self.process.stdout is not None
        with self.log_path.open("a", encoding="utf-8") as log:
            while chunk := self.process.stdout.read1(65536):  # type: ignore[attr-defined]
                with self.lock:
                    final = self.terminal.feed(decoder.decode(chunk))
                    self.lines.extend(final)
                    self._remember(find_progress(self.terminal.screen()) or find_progress(final))
                if final:
                    log.write("".join(line + "\n" for line in final))
                    log.flush()
            with self.lock:
                final = self.terminal.finish()
                self.lines.extend(final)
                self._remember(find_progress(final))
            log.write("".join(line + "\n" for line in final))
        self.process.wait()
        self.ended = time.time()
        self._record()

    def _remember(self, progress: Progress | None) -> None:
        if progress is not None:
            self.progress = self.bars[progress.label] = progress

    # ------------------------------------------------------------------------------------------ control

    @property
    def state(self) -> str:
        code = self.process.poll()
        if code is None or self.pump.is_alive():
            return "stopping" if self.stops else "running"
        if self.stops:
            return "stopped"
        return "finished" if code == 0 else "failed"

    def stop(self) -> None:
        """SIGINT (graceful: a checkpoint at the end of the step), again (at once), then SIGKILL."""
        if self.process.poll() is not None:
            return
        self.stops += 1
        if os.name != "posix":
            self.process.terminate()
            return
        sig = signal.SIGINT if self.stops <= 2 else signal.SIGKILL
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process and its output; returns the exit status (None on timeout)."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.pump.join(timeout)
        return code

    def view(self, lines: int = 300) -> JobView:
        """A snapshot: state, the last progress bar, and the last `lines` lines of output."""
        with self.lock:
            screen = self.terminal.screen()
            tail = [*list(self.lines)[-lines:], *screen][-lines:]
            progress = self.progress
            if self.process.poll() is not None and "training" in self.bars:
                progress = self.bars["training"]  # once ended, the bar that matters (not the last report's)
        code = self.process.poll()
        return JobView(
            self.id, self.kind, self.target, self.state, code, progress, "\n".join(tail), self.started, self.ended,
            self.argv,
        )  # fmt: skip


class JobManager:
    """The jobs of one server; at most one running job per (kind, target)."""

    def __init__(self, jobs_dir: Path) -> None:
        self.jobs_dir = jobs_dir
        self.jobs: list[Job] = []
        self.lock = threading.Lock()

    def start(
        self, kind: str, argv: list[str], cwd: Path, target: str, exclusive: bool = False,
        env: dict[str, str] | None = None,
    ) -> Job:  # fmt: skip
        """Start `argv` in `cwd` (with `env` added to the environment); refuse while a job of this kind runs on the
        same target (on any target, if `exclusive`)."""
        with self.lock:
            for job in self.jobs:
                if job.kind == kind and job.view(0).running and (exclusive or job.target == target):
                    raise UserError(f"a {kind} job is already running ({job.target}); stop it first")
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{len(self.jobs) + 1}"
            job = Job(job_id, kind, argv, cwd, self.jobs_dir / job_id, target, env)
            self.jobs.append(job)
            return job

    def latest(self, kind: str, target: str | None = None) -> Job | None:
        """The newest job of `kind` (on `target`), running or not."""
        found = [j for j in self.jobs if j.kind == kind and (target is None or j.target == target)]
        return found[-1] if found else None

    def stop_latest(self, kind: str) -> None:
        """Stop the newest job of `kind` (see `Job.stop`); nothing when there is none."""
        job = self.latest(kind)
        if job is not None:
            job.stop()

    def running(self, kind: str | None = None) -> list[Job]:
        """The jobs (of `kind`) whose process is still alive."""
        return [j for j in self.jobs if (kind is None or j.kind == kind) and j.process.poll() is None]

    def shutdown(self, timeout: float = 60) -> None:
        """Stop every running job gracefully; kill what is still running after `timeout` seconds."""
        alive = self.running()
        for job in alive:
            job.stop()
        deadline = time.monotonic() + timeout
        for job in alive:
            if job.wait(max(0.1, deadline - time.monotonic())) is None:
                job.stops = 2
                job.stop()
                job.wait(10)
