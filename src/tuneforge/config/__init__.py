"""Typed, strict configuration: YAML file + dotted overrides → RunConfig."""

from tuneforge.config.load import load_config, parse_overrides
from tuneforge.config.schema import RunConfig

__all__ = ["RunConfig", "load_config", "parse_overrides"]
