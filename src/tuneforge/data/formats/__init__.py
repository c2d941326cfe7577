"""Row formats: each turns one raw row (a dict) into a Conversation. Registry FORMATS, picked by data.format."""

from tuneforge.data.formats import alpaca, openai, sharegpt  # noqa: E402,F401  (registration side effects)
from tuneforge.data.formats.base import FORMATS, detect_format

__all__ = ["FORMATS", "detect_format"]
