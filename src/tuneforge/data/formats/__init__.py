"""Row formats: each turns one raw row (a dict) into a ParsedRow. Registry FORMATS, picked by data.format."""

from tuneforge.data.formats import alpaca, openai, prompt_completion, sharegpt  # noqa: F401  (registration)
from tuneforge.data.formats.base import FORMATS, Columns, ParsedRow, detect_format

__all__ = ["FORMATS", "Columns", "ParsedRow", "detect_format"]
