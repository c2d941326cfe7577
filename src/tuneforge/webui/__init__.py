"""The web UI (`tuneforge webui`): Gradio forms generated from the config schema over the same CLI.

Importing this package does not import Gradio; `tuneforge.webui.app` does (the `webui` extra).
"""

from tuneforge.webui.workspace import Workspace

__all__ = ["Workspace"]
