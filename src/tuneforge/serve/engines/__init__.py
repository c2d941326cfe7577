"""Generation engines behind the server (registry ENGINES): transformers (default), vLLM and llama.cpp.

Each engine module registers an EngineSpec; vLLM and llama.cpp import their own packages only when opened.
"""

from tuneforge.registry import import_submodules
from tuneforge.serve.engines.base import ENGINES, Engine, EngineSpec, Job, Tokens

__all__ = ["ENGINES", "Engine", "EngineSpec", "Job", "Tokens"]

import_submodules(__name__, __path__)  # every module registers itself
