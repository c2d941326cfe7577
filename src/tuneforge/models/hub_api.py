"""The two model hubs tuneforge fetches from, over plain HTTP: where they are, what a repository holds, which of its
files a model needs.

- Hugging Face: `$HF_ENDPOINT` (default https://huggingface.co). The files of a revision are listed by
  `/api/models/{id}/revision/{rev}?blobs=true` (`siblings`: path, size, git blob id and, for LFS files, sha256); a
  file is `/{id}/resolve/{rev}/{path}`, and LFS files redirect to a CDN.
- ModelScope: `$MODELSCOPE_DOMAIN` (a host name as the ModelScope SDK takes it, or a URL; default
  https://modelscope.cn). The files are listed by `/api/v1/models/{id}/repo/files?Revision={rev}&Recursive=True`
  (`Data.Files`: path, size, sha256); a file is `/api/v1/models/{id}/repo?Revision={rev}&FilePath={path}`.

An access token (HF_TOKEN, MODELSCOPE_API_TOKEN) is sent only to the configured endpoint. Redirects are followed only
to https or to the endpoint's own host; the token stays behind when the host changes.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import Any
from urllib.parse import quote, quote_plus, urljoin, urlsplit

from tuneforge import __version__
from tuneforge.errors import UserError

__all__ = [
    "DEFAULT_REVISIONS",
    "HUBS",
    "HUB_TITLES",
    "HubClient",
    "HubError",
    "HubHTTPError",
    "Listing",
    "RemoteFile",
    "TOKEN_VARIABLES",
    "check_repo_id",
    "hub_endpoint",
    "hub_token",
    "is_safe_repo_path",
    "needed_files",
    "weight_files",
]

HUBS = ("huggingface", "modelscope")
HUB_TITLES = {"huggingface": "Hugging Face", "modelscope": "ModelScope"}
DEFAULT_REVISIONS = {"huggingface": "main", "modelscope": "master"}
_DEFAULT_ENDPOINTS = {"huggingface": "https://huggingface.co", "modelscope": "https://modelscope.cn"}
_ENDPOINT_VARIABLES = {"huggingface": "HF_ENDPOINT", "modelscope": "MODELSCOPE_DOMAIN"}
TOKEN_VARIABLES = {"huggingface": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"), "modelscope": ("MODELSCOPE_API_TOKEN",)}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_OID = re.compile(r"^[0-9a-f]{40}$")
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 10
_MAX_LISTING_BYTES = 64 << 20

# What loading a causal LM reads besides its weights: config, generation defaults, tokenizer and chat template files.
_MODEL_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "spiece.model",
        "chat_template.jinja",
        "chat_template.json",
    }
)
_WEIGHTS_INDEX = "model.safetensors.index.json"
_PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class HubError(UserError):
    """A hub could not give a model; the message names the id, the hub and what to do."""


class HubHTTPError(HubError):
    """A hub answered a request with an HTTP error status (`code`)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repository: where to fetch it and what it must be (size and hashes, when listed)."""

    path: str
    url: str
    size: int | None = None
    sha256: str | None = None
    git_oid: str | None = None  # Hugging Face's git blob id of a file kept in git (not LFS): sha1 of its blob


@dataclass(frozen=True)
class Listing:
    """The files of one revision of a repository, by path, and the commit it resolved to (when the hub says)."""

    files: dict[str, RemoteFile]
    commit: str | None


def check_repo_id(repo_id: str, hub: str) -> None:
    """Refuse anything but `owner/name` made of letters, digits, `_`, `.` and `-` (it becomes a folder name)."""
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise UserError(f"{repo_id!r} is not a {HUB_TITLES[hub]} model id: expected owner/name, e.g. Qwen/Qwen3-0.6B")


def hub_endpoint(hub: str) -> str:
    """The base URL of a hub: $HF_ENDPOINT or $MODELSCOPE_DOMAIN when set, else the public site."""
    value = os.environ.get(_ENDPOINT_VARIABLES[hub], "").strip() or _DEFAULT_ENDPOINTS[hub]
    if "://" not in value:  # ModelScope's variable holds a host name; its SDK puts https:// in front
        value = f"https://{value}"
    return value.rstrip("/")


def hub_token(hub: str) -> tuple[str, str] | None:
    """(variable, token) of the hub's access token in the environment, if one is set."""
    for variable in TOKEN_VARIABLES[hub]:
        token = os.environ.get(variable, "").strip()
        if token:
            return variable, token
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class _NoAutomaticRedirects(urllib.request.HTTPRedirectHandler):
    """Hand every redirect back to HubClient, which decides where to go and which headers go along."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HubClient:
    """Requests to one hub about one repository, under tuneforge's token and redirect rules."""

    def __init__(self, hub: str, repo_id: str, timeout: float = 60.0) -> None:
        if hub not in HUBS:
            raise UserError(f"unknown hub {hub!r}: expected one of {', '.join(HUBS)}")
        check_repo_id(repo_id, hub)
        self.hub = hub
        self.repo_id = repo_id
        self.endpoint = hub_endpoint(hub)
        self.token = hub_token(hub)
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoAutomaticRedirects)

    def fail(self, reason: str) -> HubError:
        """The error for `reason`, naming the model and the hub."""
        return HubError(f"cannot load {self.repo_id!r} from the {HUB_TITLES[self.hub]} hub: {reason}")

    def open(self, url: str, headers: dict[str, str] | None = None) -> HTTPResponse:
        """GET `url` (following allowed redirects); raises HubHTTPError for an error status, OSError when the
        connection fails."""
        for _ in range(_MAX_REDIRECTS + 1):
            request = urllib.request.Request(url, headers=self._headers(url, headers or {}))
            try:
                return self._opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as err:
                location = err.headers.get("Location") if err.code in _REDIRECTS else None
                err.close()
                if location is None:
                    raise self._status_error(url, err.code) from None
                url = self._redirect_target(url, location)
        raise self.fail(f"more than {_MAX_REDIRECTS} redirects from {url}")

    def _headers(self, url: str, extra: dict[str, str]) -> dict[str, str]:
        headers = {"User-Agent": f"tuneforge/{__version__}", **extra}
        if self.token is not None and _origin(url) == _origin(self.endpoint):
            headers["Authorization"] = f"Bearer {self.token[1]}"
        return headers

    def _redirect_target(self, current: str, location: str) -> str:
        target = urljoin(current, location)
        scheme, host, _ = _origin(target)
        if scheme == "https" or (scheme == "http" and host == _origin(self.endpoint)[1]):
            return target
        raise self.fail(
            f"{current} redirected to {target}, which was refused: only https, or the endpoint's own host, is followed"
        )

    def _status_error(self, url: str, code: int) -> HubHTTPError:
        if code in (401, 403):
            if self.token is None:
                variable = TOKEN_VARIABLES[self.hub][0]
                fix = f"if it is private or gated, set {variable} to an access token that can read it"
            else:
                fix = f"the token in {self.token[0]} cannot read it"
            reason = f"{url} answered {code}: check the id; {fix} (and accept the model's terms on its page)"
        elif code == 404:
            reason = f"{url} answered 404 (not found): check the id and the revision"
        else:
            reason = f"{url} answered HTTP {code}; try again later"
        return HubHTTPError(self.fail(reason).args[0], code)

    def _json(self, url: str) -> Any:
        try:
            with self.open(url, {"Accept": "application/json"}) as response:
                body = response.read(_MAX_LISTING_BYTES + 1)
        except OSError as err:
            raise self.unreachable(err) from None
        try:
            return json.loads(body)
        except ValueError:
            raise self.fail(f"{url} did not answer with a JSON file list") from None

    def unreachable(self, err: BaseException) -> HubError:
        """The error for a connection that failed (no network, wrong endpoint)."""
        variable = _ENDPOINT_VARIABLES[self.hub]
        reason = getattr(err, "reason", None) or err
        return self.fail(f"{self.endpoint} is unreachable ({reason}); check the network, or {variable}")

    def file_url(self, path: str, revision: str) -> str:
        """The download URL of one file of the repository."""
        if self.hub == "huggingface":
            return f"{self.endpoint}/{self.repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"
        return (
            f"{self.endpoint}/api/v1/models/{self.repo_id}/repo?Revision={quote_plus(revision)}"
            f"&FilePath={quote_plus(path)}"
        )

    def list_files(self, revision: str) -> Listing:
        """The files of `revision` of the repository, with the sizes and hashes the hub gives."""
        if self.hub == "huggingface":
            return self._list_huggingface(revision)
        return self._list_modelscope(revision)

    def _list_huggingface(self, revision: str) -> Listing:
        url = f"{self.endpoint}/api/models/{self.repo_id}/revision/{quote(revision, safe='')}?blobs=true"
        data = self._json(url)
        siblings = data.get("siblings") if isinstance(data, dict) else None
        if not isinstance(siblings, list):
            raise self.fail(f"{url} answered without a file list (siblings)")
        commit = data.get("sha") if isinstance(data.get("sha"), str) and _GIT_OID.match(data["sha"]) else None
        files = {}
        for entry in siblings:
            path = entry.get("rfilename") if isinstance(entry, dict) else None
            if not isinstance(path, str):
                continue
            lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
            size = (lfs or entry).get("size")
            files[path] = RemoteFile(
                path=path,
                url=self.file_url(path, commit or revision),  # one commit for every file, even if main moves on
                size=size if isinstance(size, int) and size >= 0 else None,
                sha256=_matching(_SHA256, (lfs or {}).get("sha256")),
                git_oid=None if lfs else _matching(_GIT_OID, entry.get("blobId")),
            )
        return Listing(files=files, commit=commit)

    def _list_modelscope(self, revision: str) -> Listing:
        url = f"{self.endpoint}/api/v1/models/{self.repo_id}/repo/files?Revision={quote_plus(revision)}&Recursive=True"
        data = self._json(url)
        if not isinstance(data, dict) or data.get("Code", 200) != 200 or data.get("Success") is False:
            message = data.get("Message") if isinstance(data, dict) else None
            raise self.fail(f"{url} answered {message or 'an error'}: check the id and the revision")
        entries = (data.get("Data") or {}).get("Files")
        if not isinstance(entries, list):
            raise self.fail(f"{url} answered without a file list (Data.Files)")
        files = {}
        for entry in entries:
            path = (entry.get("Path") or entry.get("Name")) if isinstance(entry, dict) else None
            if not isinstance(path, str) or entry.get("Type") == "tree":
                continue
            size = entry.get("Size")
            files[path] = RemoteFile(
                path=path,
                url=self.file_url(path, revision),
                size=size if isinstance(size, int) and size >= 0 else None,
                sha256=_matching(_SHA256, entry.get("Sha256")),
            )
        return Listing(files=files, commit=None)


def _matching(pattern: re.Pattern[str], value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and pattern.match(value.lower()) else None


def is_safe_repo_path(path: str) -> bool:
    """Whether a path from a hub's listing stays inside the download folder (relative, no `..`, no drive)."""
    parts = path.split("/")
    return "\\" not in path and all(part not in ("", ".", "..") for part in parts) and ":" not in parts[0]


def needed_files(client: HubClient, paths: list[str], include_code: bool = False) -> list[str]:
    """The repository files a model needs besides its weights (see `weight_files`): config, tokenizer, generation
    defaults and chat templates, and its Python files when `include_code` (remote code was allowed).

    Raises HubError when the repository has no config.json or no safetensors weights (tuneforge never loads pickles).
    """
    top = [p for p in paths if "/" not in p and is_safe_repo_path(p)]
    wanted = [p for p in top if p in _MODEL_FILES or p.endswith(".tiktoken") or (include_code and p.endswith(".py"))]
    wanted += [
        p
        for p in paths
        if p.startswith("additional_chat_templates/") and p.endswith(".jinja") and is_safe_repo_path(p)
    ]
    if "config.json" not in top:
        raise client.fail("the repository has no config.json at its top level: not a transformers model")
    if not any(p.endswith(".safetensors") for p in top):
        pickles = sorted(p for p in top if p.endswith(_PICKLED_WEIGHTS))
        found = f" (it has {', '.join(pickles)}: pickle files, which can run code when loaded)" if pickles else ""
        raise client.fail(f"the repository has no .safetensors weights{found}; tuneforge loads safetensors only")
    return sorted(set(wanted))


def weight_files(client: HubClient, paths: list[str], index: dict[str, Any] | None) -> list[str]:
    """The safetensors files to fetch: the shards the index names, else model.safetensors, else every top-level
    .safetensors file (a repository may also carry the same weights in another layout, e.g. consolidated.*)."""
    top = {p for p in paths if "/" not in p and is_safe_repo_path(p)}
    if index is not None:
        weight_map = index.get("weight_map")
        shards = set(weight_map.values()) if isinstance(weight_map, dict) else set()
        missing = sorted(s for s in shards if not isinstance(s, str) or s not in top)
        if not shards or missing:
            raise client.fail(f"{_WEIGHTS_INDEX} names shards the repository does not have: {missing or 'none'}")
        return [_WEIGHTS_INDEX, *sorted(shards)]
    if "model.safetensors" in top:
        return ["model.safetensors"]
    return sorted(p for p in top if p.endswith(".safetensors"))
