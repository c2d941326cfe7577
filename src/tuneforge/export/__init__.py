"""Export: merged Hugging Face folders, GGUF files and Ollama Modelfiles (registry EXPORTERS).

Each format registers an Exporter in its own module; importing this package registers them all.
"""

from tuneforge.export.base import EXPORTERS, Exporter, ExportOptions, run_export
from tuneforge.export.gguf import DTYPES as GGUF_TYPES
from tuneforge.registry import import_submodules

__all__ = ["EXPORTERS", "GGUF_TYPES", "ExportOptions", "Exporter", "run_export"]

import_submodules(__name__, __path__)  # every module registers itself
