"""Generation engines behind the server: transformers (default), and vLLM or llama.cpp when installed.

Only the interface is imported here; each engine module imports its own heavy packages.
"""

from tuneforge.serve.engines.base import Engine, Job, Tokens

__all__ = ["Engine", "Job", "Tokens"]
