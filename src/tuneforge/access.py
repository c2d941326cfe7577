"""What a tuneforge process may reach beyond local files: the model hub, and Python code shipped with a model.

Both are off by default and turned on only by the person running the command:

- **The hub.** A name like `runs/my-rnu` looks like a hub id (`org/name`); offline by default means a missing
  local path is an error naming it, never a download. The hub is allowed only with `--online`, `model.hub: true` in
  the training config, or `HF_HUB_OFFLINE=0` in the environment; otherwise `HF_HUB_OFFLINE=1` is set for the process
  so that no library reaches the network either. Which hub a download uses is the Hugging Face hub unless a
  training config says `model.hub: modelscope` (`chosen_hub`); `tuneforge models pull` is its own permission.
- **Remote code.** `trust_remote_code` is on only when the command line says `--trust-remote-code` (or the training
  config the command line names says `model.trust_remote_code: true`); a run directory's recorded config never turns
  it on, because an edited run folder must not be able to run code.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = [
    "allow_hub",
    "allow_remote_code",
    "chosen_hub",
    "enforce_offline",
    "forbid_remote_code",
    "hub_allowed",
    "remote_code_allowed",
]

_log = logging.getLogger(__name__)
_OFF_VALUES = {"0", "false", "no", "off"}
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_remote_code = {"allowed": False}
_hub = {"name": "huggingface"}


def hub_allowed() -> bool:
    """Whether hub downloads were asked for: HF_HUB_OFFLINE is set to a false value (--online sets it to 0)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _OFF_VALUES


def _set_offline(offline: bool) -> None:
    for name in _OFFLINE_VARIABLES:
        os.environ[name] = "1" if offline else "0"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # read once at import: keep the loaded module in step with the environment
        constants.HF_HUB_OFFLINE = offline


def enforce_offline() -> None:
    """Set HF_HUB_OFFLINE=1 for this process unless the hub was explicitly allowed; the hub is Hugging Face's."""
    _hub["name"] = "huggingface"
    if not hub_allowed():
        _set_offline(True)


def allow_hub(reason: str, hub: str = "huggingface") -> None:
    """Allow hub downloads for this process (`reason` says who asked, e.g. '--online'), from `hub`
    (huggingface or modelscope)."""
    if not hub_allowed():
        _log.info("hub downloads allowed (%s)", reason)
    _hub["name"] = hub
    _set_offline(False)


def chosen_hub() -> str:
    """The hub a download of a hub id uses: huggingface, or modelscope when a training config asked for it."""
    return _hub["name"]


def allow_remote_code(reason: str) -> None:
    """Let models run the Python code they ship with, for this process; says so visibly on stderr."""
    if not _remote_code["allowed"]:
        print(  # noqa: T201
            f"tuneforge: warning: {reason}: Python code shipped with the model will run on this machine",
            file=sys.stderr,
        )
    _remote_code["allowed"] = True


def remote_code_allowed() -> bool:
    """Whether the command line allowed remote code (see allow_remote_code)."""
    return _remote_code["allowed"]


def forbid_remote_code() -> None:
    """Back to the default, remote code off (each CLI command starts here, even when run in one process)."""
    _remote_code["allowed"] = False
