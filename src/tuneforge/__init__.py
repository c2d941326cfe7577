"""tuneforge: offline-first fine-tuning of large language models from one YAML config."""

__all__ = ["__version__"]

__version__ = "0.1.0"
