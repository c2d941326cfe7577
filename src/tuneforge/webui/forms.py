"""The training form, generated from the config schema: one field per config key, typed, with its default and help.

Nothing here imports Gradio: `form_fields()` turns the pydantic sections (and every registered method's and
adapter's parameter class) into `FieldSpec`s; `parse_value` / `format_value` convert between what a form widget
holds and what the config takes; `assemble` builds the raw config dict that `tuneforge.config.load` validates,
exactly as if it came from a YAML file. A new schema field appears in the page with no change here.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tuneforge.config.schema import RunConfig, Section
from tuneforge.config.variants import VARIANT_SECTIONS
from tuneforge.errors import UserError

__all__ = [
    "ALWAYS_KEYS",
    "PICKED_KEYS",
    "FieldKind",
    "FieldSpec",
    "assemble",
    "default_values",
    "field_spec",
    "form_fields",
    "format_value",
    "parse_value",
    "values_from_config",
    "variant_fields",
]

FieldKind = Literal["bool", "choice", "int", "float", "text", "list", "numbers", "multi", "yaml"]

# Keys the page picks with their own widgets (model, datasets, run folder, method and adapter names); their
# specs still carry the schema's help text and default.
PICKED_KEYS = ("model.name_or_path", "data.train", "data.dataset", "data.dataset_dir", "output.dir")
# Keys every config the page writes holds, default or not (what a reader of the YAML wants to see first).
ALWAYS_KEYS = ("model.name_or_path", "data.train", "output.dir")
_BOOL_CHOICES = ("true", "false")


@dataclass(frozen=True)
class FieldSpec:
    """One config key as a form field.

    Attributes:
        path: where the value goes in the config, e.g. ("train", "learning_rate") or ("method", "beta").
        variant: the method or adapter whose parameter this is (None: a field of every config).
        kind: the widget family (see `FieldKind`).
        default: the schema's default, in config form (None when there is none or it is None).
        choices: the allowed values of a choice or multi field, as shown (strings).
        optional: an empty field means None (null in YAML).
        required: the schema has no default: the user must fill it in.
        help: the schema's description (English; translations live in tuneforge.webui.i18n).
    """

    path: tuple[str, ...]
    variant: str | None
    kind: FieldKind
    default: Any
    choices: tuple[str, ...] = ()
    optional: bool = False
    required: bool = False
    help: str = ""
    str_or_list: bool = False  # `str | list[str]`: a single value equal to the default stays a string

    @property
    def key(self) -> str:
        """The form's name for the field: the config key with the method/adapter name after the section."""
        head, *rest = self.path
        return ".".join([head, *([self.variant] if self.variant else []), *rest])

    @property
    def name(self) -> str:
        return self.path[-1]


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _literal_values(annotation: Any) -> tuple[Any, ...] | None:
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None


def _list_kind(item: Any) -> tuple[FieldKind, tuple[str, ...]]:
    values = _literal_values(item)
    if values is not None:
        return "multi", tuple(str(v) for v in values)
    if item is str:
        return "list", ()
    if item in (int, float):
        return "numbers", ()
    return "yaml", ()


def _kind_of(annotation: Any) -> tuple[FieldKind, tuple[str, ...], bool, bool]:
    """(kind, choices, optional, str_or_list) of a field's annotation."""
    args = _union_args(annotation)
    optional = type(None) in args
    rest = [a for a in args if a is not type(None)]
    if len(rest) == 1:
        only = rest[0]
        literal = _literal_values(only)
        if only is bool:
            return "bool", (), optional, False
        if only in (int, float):
            return ("int" if only is int else "float"), (), optional, False
        if only is str:
            return "text", (), optional, False
        if literal is not None:
            return "choice", tuple(str(v) for v in literal), optional, False
        if typing.get_origin(only) is list:
            kind, choices = _list_kind(typing.get_args(only)[0])
            return kind, choices, optional, False
        return "yaml", (), optional, False
    literals = [v for a in rest if (values := _literal_values(a)) is not None for v in values]
    others = [a for a in rest if _literal_values(a) is None]
    if others == [bool] and literals:
        return "choice", (*(str(v) for v in literals), *_BOOL_CHOICES), optional, False
    if str in others and any(typing.get_origin(a) is list for a in others) and not literals:
        return "list", (), optional, True
    if str in others:  # e.g. `"auto" | bool | path`: typed as a YAML scalar
        return "text", (), optional, False
    return "yaml", (), optional, False


def _plain(value: Any) -> Any:
    """A default in the form the config's YAML would hold it (models dumped, tuples as lists)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def field_spec(path: tuple[str, ...], info: FieldInfo, variant: str | None = None) -> FieldSpec:
    """The form field of one schema field."""
    kind, choices, optional, str_or_list = _kind_of(info.annotation)
    required = info.is_required()
    default = None if required else _plain(info.get_default(call_default_factory=True))
    return FieldSpec(
        path=path,
        variant=variant,
        kind=kind,
        default=default,
        choices=choices,
        optional=optional,
        required=required,
        help=info.description or "",
        str_or_list=str_or_list,
    )


def _section_fields(section: str, cls: type[Section], variant: str | None = None) -> list[FieldSpec]:
    return [
        field_spec((section, name), info, variant)
        for name, info in cls.model_fields.items()
        if not (variant and name == "name")
    ]


def variant_fields(key: str, name: str) -> list[FieldSpec]:
    """The fields of method (key="method") or adapter (key="adapter") `name`, its `name` excluded."""
    variant = next(v for v in VARIANT_SECTIONS if v.key == key)
    return _section_fields(key, variant.registry.get(name), name)


def form_fields() -> list[FieldSpec]:
    """Every field of the training form: each plain section's keys, then every method's and adapter's parameters.

    `import tuneforge.methods` must have run (it registers the method and adapter parameter classes).
    """
    specs: list[FieldSpec] = []
    variant_keys = {v.key for v in VARIANT_SECTIONS}
    for name, info in RunConfig.model_fields.items():
        if name in variant_keys:
            continue
        if _is_section(info.annotation):
            specs += _section_fields(name, info.annotation)
        else:
            specs.append(field_spec((name,), info))
    for variant in VARIANT_SECTIONS:
        if not variant.registry.names():
            raise RuntimeError(f"no {variant.key} is registered: import tuneforge.methods first")
        for name in variant.registry.names():
            specs += variant_fields(variant.key, name)
    return specs


# ------------------------------------------------------------------------------------------ value conversion


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _number(spec: FieldSpec, value: Any) -> int | float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{spec.key}: {value!r} is not a number") from None
    if spec.kind == "int" or (spec.kind == "numbers" and number.is_integer()):
        if not number.is_integer():
            raise UserError(f"{spec.key}: {value!r} must be a whole number")
        return int(number)
    return number


def _choice(spec: FieldSpec, value: Any) -> Any:
    text = str(value)
    if text in _BOOL_CHOICES and spec.choices[-2:] == _BOOL_CHOICES:
        return text == "true"
    if text not in spec.choices:
        raise UserError(f"{spec.key}: {text!r} is not one of {', '.join(spec.choices)}")
    return text


def _yaml(spec: FieldSpec, value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise UserError(f"{spec.key}: not valid YAML ({getattr(err, 'problem', err)}): {value!r}") from None


def parse_value(spec: FieldSpec, value: Any) -> Any:
    """A form widget's value → the config value (None for an empty optional field). Raises UserError."""
    empty = value is None or (isinstance(value, str | list) and not value)
    if empty and spec.kind not in ("bool", "multi"):
        if spec.optional:
            return None
        if spec.required:
            raise UserError(f"{spec.key} is required: {spec.help}")
        if spec.kind in ("list", "numbers"):
            return []
        if spec.kind == "text":
            return ""
        return spec.default
    if spec.kind == "bool":
        return bool(value)
    if spec.kind in ("int", "float"):
        return _number(spec, value)
    if spec.kind == "choice":
        return _choice(spec, value)
    if spec.kind == "multi":
        return list(value or [])
    if spec.kind == "numbers":
        return [_number(spec, item) for item in _items(str(value))]
    if spec.kind == "list":
        items = _items(value) if isinstance(value, str) else [str(v) for v in value]
        return items[0] if spec.str_or_list and items == [spec.default] else items
    if spec.kind == "yaml":
        return _yaml(spec, str(value))
    text = str(value).strip()
    return _yaml(spec, text) if text.lower() in ("true", "false", "yes", "no", "on", "off") else text


def format_value(spec: FieldSpec, value: Any) -> Any:
    """A config value → what the form widget shows."""
    value = _plain(value)
    if spec.kind == "bool":
        return bool(value)
    if spec.kind in ("int", "float"):
        return ("" if value is None else str(value)) if spec.optional else value
    if spec.kind == "choice":
        return None if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
    if spec.kind == "multi":
        return list(value or [])
    if spec.kind in ("list", "numbers"):
        if value is None:
            return ""
        return str(value) if isinstance(value, str) else ", ".join(str(v) for v in value)
    if spec.kind == "yaml":
        if value is None:
            return ""
        return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, sort_keys=False).strip()
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def default_values(specs: list[FieldSpec]) -> dict[str, Any]:
    """Each field's default, as its widget shows it."""
    return {spec.key: format_value(spec, spec.default) for spec in specs}


# ------------------------------------------------------------------------------------------ form <-> config


def _set(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def assemble(
    specs: list[FieldSpec], values: dict[str, Any], method: str, adapter: str, always: tuple[str, ...] = ALWAYS_KEYS
) -> dict[str, Any]:
    """The raw config dict of a filled-in form: keys that differ from their defaults (plus `always`), the chosen
    method's and adapter's parameters only. It is what a user would write in YAML; validate it with
    `tuneforge.config.load.config_from_dict`."""
    raw: dict[str, Any] = {"method": {"name": method}, "adapter": {"name": adapter}}
    chosen = {"method": method, "adapter": adapter}
    for spec in specs:
        if spec.variant is not None and chosen.get(spec.path[0]) != spec.variant:
            continue
        value = parse_value(spec, values.get(spec.key))
        if spec.key in always or spec.required or value != spec.default:
            _set(raw, spec.path, value)
    return raw


def values_from_config(specs: list[FieldSpec], config: RunConfig) -> dict[str, Any]:
    """The form values showing `config`: its method's and adapter's parameters; other variants at defaults."""
    dumped = config.model_dump(mode="json", serialize_as_any=True)
    chosen = {"method": config.method.name, "adapter": config.adapter.name}
    values = default_values(specs)
    for spec in specs:
        if spec.variant is not None and chosen.get(spec.path[0]) != spec.variant:
            continue
        node: Any = dumped
        for part in spec.path:
            node = node.get(part) if isinstance(node, dict) else None
        values[spec.key] = format_value(spec, node)
    return values
