"""Row formats: each turns one raw row (a dict) into a ParsedRow. Registry FORMATS, picked by data.format."""

from tuneforge.data.formats.base import FORMATS, Columns, ParsedRow, detect_format
from tuneforge.registry import import_submodules

__all__ = ["FORMATS", "Columns", "ParsedRow", "detect_format"]

import_submodules(__name__, __path__)  # every module registers itself
