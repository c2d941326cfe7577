"""Generation engines behind the server."""

from tuneforge.serve.engines.transformers_engine import Generation, TransformersEngine

__all__ = ["Generation", "TransformersEngine"]
