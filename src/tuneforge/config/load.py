"""Read a YAML config, apply `section.key=value` overrides, validate strictly with actionable errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.config.schema import RunConfig, Section
from tuneforge.config.variants import VARIANT_SECTIONS, VariantSection
from tuneforge.errors import UserError
from tuneforge.registry import closest

__all__ = [
    "config_from_dict",
    "dump_config",
    "load_config",
    "load_saved_config",
    "parse_overrides",
    "validate_variant",
]


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `["train.epochs=1", "data.train=[a.json]"]` into a nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or "." not in key:
            raise UserError(f"override {item!r} must look like section.key=value, e.g. train.epochs=1")
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return nested


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections (model, data, adapter, train, ...)")
    return data


# Keys that once existed, with what replaced them (an unknown-key error alone would not say).
_REMOVED_KEYS = {
    "eval.judge_api_key_env": "a config can no longer choose which environment variable is sent to a judge. "
    "The key now comes only from TUNEFORGE_JUDGE_API_KEY and is sent only to an endpoint named with --judge or "
    "TUNEFORGE_JUDGE_URL; a judge off this machine needs eval.judge_remote: true. Delete the line.",
}


def _valid_keys(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys accepted at `loc` (a path of section/field names) in `model_cls`."""
    cls: Any = model_cls
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        cls = field.annotation
        # Optional[X] → X
        for arg in getattr(cls, "__args__", ()) or ():
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                cls = arg
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return []
    return list(cls.model_fields)


def _describe(err: ValidationError, model_cls: type[BaseModel], source: str, prefix: str = "") -> str:
    lines = []
    for item in err.errors():
        loc = tuple(item["loc"])
        key = prefix + ".".join(str(p) for p in loc)
        if item["type"] == "extra_forbidden" and key in _REMOVED_KEYS:
            lines.append(f"{source}: {key!r} was removed: {_REMOVED_KEYS[key]}")
        elif item["type"] == "extra_forbidden":
            hint = closest(str(loc[-1]), _valid_keys(model_cls, loc))
            fix = f" Did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{hint}?" if hint else ""
            owner = f" for {prefix[:-1]} {model_cls.model_fields['name'].default!r}" if prefix else ""
            valid = ", ".join(_valid_keys(model_cls, loc))
            lines.append(f"{source}: unknown key {key!r}{owner}.{fix} Valid keys here: {valid}")
        else:
            lines.append(f"{source}: {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def validate_variant(variant: VariantSection, raw: Any, source: str) -> Section:
    """Validate one name-dependent section (`adapter:` or `method:`) against the class its `name` picks."""
    if not variant.registry.names():
        raise RuntimeError(
            f"no {variant.key} parameters are registered: import tuneforge.methods (it registers every method and "
            "adapter) before loading a config"
        )
    raw = dict(raw or {}) if isinstance(raw, dict) or raw is None else raw
    if not isinstance(raw, dict):
        raise UserError(f"{source}: {variant.key} must be a mapping such as {{name: {variant.default}, ...}}")
    name = str(raw.get("name", variant.default))
    try:
        params = variant.registry.get(name)
    except UserError as err:
        raise UserError(f"{source}: {variant.key}.name: {err}") from None
    try:
        return params.model_validate({**raw, "name": name})
    except ValidationError as err:
        raise UserError(_describe(err, params, source, prefix=f"{variant.key}.")) from None


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> RunConfig:
    """Validate a raw nested dict into a RunConfig; errors name `source`, the key and the closest valid key."""
    raw = dict(raw)
    variants = {v.key: validate_variant(v, raw.pop(v.key, None), source) for v in VARIANT_SECTIONS}
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(_describe(err, RunConfig, source)) from None
    for key, section in variants.items():
        setattr(config, key, section)
    return config


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load `path` (YAML) with dotted overrides applied on top, strictly validated."""
    raw = _read_yaml(Path(path)) if path else {}
    source = str(path) if path else "<overrides>"
    if overrides:
        raw = _deep_merge(raw, parse_overrides(overrides))
        source += " (with overrides)"
    return config_from_dict(raw, source)


def load_saved_config(path: str | Path) -> RunConfig:
    """A run directory's own config.yaml, which an older tuneforge may have written: keys since removed are dropped
    (they had defaults then and mean nothing now); anything else is validated as strictly as load_config."""
    raw = _read_yaml(Path(path))
    for dotted in _REMOVED_KEYS:
        *sections, key = dotted.split(".")
        node: Any = raw
        for name in sections:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return config_from_dict(raw, str(path))


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, every default written out."""
    return yaml.safe_dump(config.model_dump(mode="json", serialize_as_any=True), sort_keys=False, allow_unicode=True)
