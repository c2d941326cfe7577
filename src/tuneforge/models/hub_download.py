"""Fetch a model from the Hugging Face hub or ModelScope into tuneforge's cache: only the files loading needs,
each one resumable and verified.

The files of `owner/name` at a revision go to `$TUNEFORGE_HOME/cache/hub/<hub>/<owner>--<name>/<revision>/` under the
repository's own names; `.tuneforge-download.json` appears there once every file is in place and verified, so a folder
without it is an unfinished download that nothing loads. Each file is written to `<name>.part` first: a connection
that breaks leaves the part behind and the next attempt (or the next call) asks for the rest with an HTTP Range
request. A size or hash that differs from the hub's listing removes the file and stops with an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.atomic import atomic_write_text, fsync_dir
from tuneforge.models.hub_api import (
    DEFAULT_REVISIONS,
    HUB_TITLES,
    HUBS,
    HubClient,
    HubError,
    HubHTTPError,
    RemoteFile,
    is_safe_repo_path,
    needed_files,
    weight_files,
)
from tuneforge.paths import hub_cache_dir
from tuneforge.progress import progress_bar

__all__ = ["MARKER", "DownloadedModel", "download_folder", "download_model", "downloaded_models", "find_downloaded"]

MARKER = ".tuneforge-download.json"
_CHUNK = 1 << 20
_PART = ".part"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_log = logging.getLogger(__name__)

Advance = Callable[..., None]


class _Interrupted(Exception):
    """A transfer stopped before the end; what arrived is kept in the part file."""


class _FileProgress:
    """The share of the progress bar one file has moved, so a resumed or restarted transfer moves it right."""

    def __init__(self, advance: Advance, path: str) -> None:
        self._advance = advance
        self._path = path
        self.done = 0

    def to(self, done: int) -> None:
        self._advance(done - self.done, info=self._path)
        self.done = done


@dataclass(frozen=True)
class DownloadedModel:
    """A complete download in the cache."""

    hub: str
    repo_id: str
    revision: str
    folder: Path


def _revision_folder(revision: str) -> str:
    name = re.sub(r"[^\w.-]", "_", revision)
    if not name.strip("."):
        raise HubError(f"revision {revision!r} is not a branch, tag or commit name")
    return name


def download_folder(repo_id: str, hub: str, revision: str | None = None) -> Path:
    """Where `repo_id` of `hub` at `revision` (default: the hub's main branch) is kept."""
    owner, name = repo_id.split("/")
    return hub_cache_dir() / hub / f"{owner}--{name}" / _revision_folder(revision or DEFAULT_REVISIONS[hub])


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), dict) else None


def _complete(folder: Path) -> bool:
    marker = _read_marker(folder)
    if marker is None:
        return False
    for path, record in marker["files"].items():
        target = folder / path
        if not isinstance(record, dict) or not target.is_file() or target.stat().st_size != record.get("size"):
            return False
    return True


def find_downloaded(repo_id: str, hub: str | None = None, revision: str | None = None) -> Path | None:
    """The folder of a complete download of `repo_id` from `hub` (None: any hub, Hugging Face first), or None.

    Without `revision`: the hub's main branch, else the most recently completed other revision.
    """
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        return None
    for name in [hub] if hub else HUBS:
        folder = download_folder(repo_id, name, revision)
        if _complete(folder):
            return folder
        if revision is None and folder.parent.is_dir():
            others = [f for f in folder.parent.iterdir() if f.is_dir() and _complete(f)]
            if others:
                return max(others, key=lambda f: (f / MARKER).stat().st_mtime)
    return None


def downloaded_models() -> list[DownloadedModel]:
    """Every complete download in the cache, sorted by hub, id and revision."""
    found = []
    for marker in sorted(hub_cache_dir().glob(f"*/*/*/{MARKER}")):
        folder = marker.parent
        record = _read_marker(folder)
        if record is not None and _complete(folder):
            hub = folder.parent.parent.name
            repo_id = str(record.get("repo_id") or folder.parent.name.replace("--", "/", 1))
            found.append(DownloadedModel(hub, repo_id, str(record.get("revision") or folder.name), folder))
    return found


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One download of a folder at a time, across processes (where the OS has flock)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(folder.parent / f".{folder.name}.lock", "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def download_model(
    repo_id: str,
    hub: str = "huggingface",
    revision: str | None = None,
    include_code: bool = False,
    attempts: int = 3,
) -> Path:
    """Fetch what loading `repo_id` needs into the cache and return its folder.

    Files already there and unchanged on the hub are kept. A broken connection is retried `attempts` times per file,
    each attempt resuming where the last one stopped. Raises HubError (naming the id) when the hub cannot give the
    model or a file does not match the listing.
    """
    client = HubClient(hub, repo_id)
    revision = revision or DEFAULT_REVISIONS[hub]
    folder = download_folder(repo_id, hub, revision)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        listing = client.list_files(revision)
        paths = sorted(listing.files)
        wanted = needed_files(client, paths, include_code)
        previous = (_read_marker(folder) or {}).get("files", {})
        index = None
        if "model.safetensors.index.json" in listing.files:
            index_file = listing.files["model.safetensors.index.json"]
            _fetch_if_changed(client, index_file, folder, previous, attempts)
            index = _read_index(client, folder / index_file.path)
        plan = [listing.files[p] for p in sorted({*wanted, *weight_files(client, paths, index)})]
        todo = [f for f in plan if not _up_to_date(folder, f, previous)]
        if todo:
            (folder / MARKER).unlink(missing_ok=True)  # the folder is being changed: not loadable until done
            total = sum(f.size or 0 for f in todo)
            with progress_bar(f"fetch {repo_id}", total) as advance:
                for remote in todo:
                    _fetch(client, remote, folder, attempts, advance)
        _remove_dropped(folder, previous, {f.path for f in plan})
        record = {
            "hub": hub,
            "repo_id": repo_id,
            "revision": revision,
            "commit": listing.commit,
            "files": {f.path: _record(folder, f) for f in plan},
        }
        atomic_write_text(folder / MARKER, json.dumps(record, indent=2) + "\n")
    _log.debug("%s (%s, %s) is in %s", repo_id, HUB_TITLES[hub], revision, folder)
    return folder


def _record(folder: Path, remote: RemoteFile) -> dict[str, Any]:
    return {"size": (folder / remote.path).stat().st_size, "sha256": remote.sha256, "git_oid": remote.git_oid}


def _up_to_date(folder: Path, remote: RemoteFile, previous: dict[str, Any]) -> bool:
    """A file already in place that the listing still describes: recorded by the last complete download with the
    same size and hashes, or (after an interrupted one) matching the listing's size and hashes when checked."""
    target = folder / remote.path
    if not target.is_file():
        return False
    record = previous.get(remote.path)
    size = target.stat().st_size
    if isinstance(record, dict):
        same_hashes = (remote.sha256, remote.git_oid) == (record.get("sha256"), record.get("git_oid"))
        return size == record.get("size") and remote.size in (None, size) and same_hashes
    known = remote.size is not None or remote.sha256 is not None or remote.git_oid is not None
    return known and _mismatch(remote, target) is None


def _fetch_if_changed(
    client: HubClient, remote: RemoteFile, folder: Path, previous: dict[str, Any], attempts: int
) -> None:
    if not _up_to_date(folder, remote, previous):
        (folder / MARKER).unlink(missing_ok=True)
        _fetch(client, remote, folder, attempts, lambda n=1, info=None: None)


def _read_index(client: HubClient, path: Path) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = None
    if not isinstance(index, dict):
        raise client.fail(f"{path.name} is not a JSON object")
    return index


def _remove_dropped(folder: Path, previous: dict[str, Any], kept: set[str]) -> None:
    """Files an earlier download of this folder recorded that the repository no longer has (renamed shards): a
    stale model.safetensors beside a new index would be loaded instead of it. Only recorded files are removed."""
    for path in previous:
        if path not in kept and isinstance(path, str) and is_safe_repo_path(path):
            (folder / path).unlink(missing_ok=True)


def _fetch(client: HubClient, remote: RemoteFile, folder: Path, attempts: int, advance: Advance) -> None:
    """Download one file into its part file (resuming it), verify it, and move it into place."""
    target = folder / remote.path
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + _PART)
    progress = _FileProgress(advance, remote.path)
    for attempt in range(1, attempts + 1):
        try:
            _transfer(client, remote, part, progress)
            break
        except (_Interrupted, OSError, http.client.HTTPException) as err:
            have = part.stat().st_size if part.exists() else 0
            if attempt == attempts:
                if have == 0 and not isinstance(err, _Interrupted):
                    raise client.unreachable(err) from None
                raise client.fail(
                    f"{remote.path}: the download stopped after {have} bytes ({err}); run the command again to resume "
                    "it"
                ) from None
            _log.warning("%s: the download stopped after %d bytes (%s); resuming", remote.path, have, err)
    _verify(client, remote, part)
    os.replace(part, target)
    fsync_dir(target.parent)


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)$", (value or "").strip())
    return int(match.group(1)) if match else None


def _transfer(client: HubClient, remote: RemoteFile, part: Path, progress: _FileProgress) -> None:
    """Append the rest of `remote` to `part` (or start it over when the server cannot resume)."""
    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have > remote.size:
        part.unlink()
        have = 0
    progress.to(have)
    if remote.size is not None and have == remote.size:
        return
    try:
        response = client.open(remote.url, {"Range": f"bytes={have}-"} if have else {})
    except HubHTTPError as err:
        if err.code >= 500:
            raise _Interrupted(str(err)) from None  # the hub is struggling: worth another attempt
        if err.code != 416 or not have:
            raise
        part.unlink()  # the server has fewer bytes than the part: it changed; start over
        progress.to(0)
        raise _Interrupted("the server could not resume the part file, starting over") from None
    with response, part.open("ab" if have else "wb") as out:
        if have and (response.status != 206 or _content_range_start(response.headers.get("Content-Range")) != have):
            out.truncate(0)  # the server sent the whole file: start over
            progress.to(0)
            have = 0
        expected = response.headers.get("Content-Length")
        received = 0
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            received += len(chunk)
            progress.to(have + received)
        out.flush()
        os.fsync(out.fileno())
    if expected is not None and expected.isdigit() and received < int(expected):
        raise _Interrupted(f"the connection closed after {received} of {expected} bytes")
    if remote.size is not None and have + received < remote.size:
        raise _Interrupted(f"the connection closed at {have + received} of {remote.size} bytes")


def _mismatch(remote: RemoteFile, path: Path) -> str | None:
    """How the file at `path` differs from the listing's size and hashes, or None."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{size} bytes where the hub lists {remote.size}"
    if remote.sha256 or remote.git_oid:
        sha256 = hashlib.sha256()
        git = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                sha256.update(chunk)
                git.update(chunk)
        if remote.sha256 and sha256.hexdigest() != remote.sha256:
            return f"sha256 {sha256.hexdigest()} where the hub lists {remote.sha256}"
        if remote.git_oid and git.hexdigest() != remote.git_oid:
            return f"git blob id {git.hexdigest()} where the hub lists {remote.git_oid}"
    return None


def _verify(client: HubClient, remote: RemoteFile, part: Path) -> None:
    """Check size and hashes against the listing; a mismatching file is removed, never kept."""
    problem = _mismatch(remote, part)
    if problem is not None:
        part.unlink()
        raise client.fail(f"{remote.path} is corrupt ({problem}); it was removed, run the command again to fetch it")
