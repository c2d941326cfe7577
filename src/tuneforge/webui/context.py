"""What every tab of the page shares: the workspace, the jobs, the chat models and the form's fields."""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.webui.chat import ChatModels
from tuneforge.webui.forms import FieldSpec
from tuneforge.webui.jobs import JobManager
from tuneforge.webui.workspace import Workspace

__all__ = ["UIContext"]


@dataclass
class UIContext:
    """The server's state, shared by every page and tab."""

    ws: Workspace
    jobs: JobManager
    chat: ChatModels
    specs: list[FieldSpec]
    lang: str = "en"

    def run_choices(self) -> list[tuple[str, str]]:
        """The workspace's runs for a dropdown: (name, path as the page writes it), newest first."""
        return [(path.name, self.ws.display(path)) for path in self.ws.run_dirs()]
