"""The `tuneforge` command line: one module per verb, listed in main.py."""

__all__: list[str] = []
