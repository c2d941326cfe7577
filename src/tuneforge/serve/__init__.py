"""OpenAI-compatible serving of a model or a finished run."""

__all__: list[str] = []
