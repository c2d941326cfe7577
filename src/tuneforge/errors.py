"""The one exception type a user is meant to read: a message that names the problem and the fix."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """An error caused by the user's input (config, data, paths) rather than a bug.

    The CLI prints its message on one line and exits with status 2; `--debug` shows the traceback.
    """
