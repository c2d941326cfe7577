"""Rewards for GRPO: built-in rule rewards, their `method.rewards` config entries, and user reward functions.

Every reward is a function `fn(completion, reference, prompt, **keys) -> float`: `completion` is the sampled
answer (special tokens removed), `reference` the data's own answer, `prompt` the rendered prompt the model
answered (chat template and special tokens included); `keys` are the entry's own config keys. An answer's score is
the weighted sum of the rewards of all `method.rewards` entries.

Built-in rewards (the `REWARDS` registry):

- `exact_answer`: 1.0 when the completion gives the reference answer, else 0.0. A numeric reference (such as
  `42`, `-3` or `2.5`; thousands separators are ignored) is compared by value with the *last* number in the
  completion, so `The answer is 42.` counts; any other reference is compared with the whole completion, both
  stripped of surrounding whitespace and case-folded.
- `format` (keys `pattern`, `match`): 1.0 when the regular expression matches the stripped completion:
  `re.search` anywhere (`match: search`, the default) or the whole of it (`match: full`); `.` also matches a
  newline.
- `length` (keys `target`, `scale`): lengths are counted in characters of the stripped completion (no tokenizer
  needed, the same for every model); the reward is 1.0 at `target` characters and falls linearly with the
  distance, to 0.0 at `scale` characters away (default: the target itself, at least 1), and stays 0 beyond.

User rewards: `{function: "module:callable", weight}`, where `module` is a Python file or an importable module
listed in the top-level `plugins:` (a file also by its file name or stem). Plugins are imported when the config is
checked, before anything loads, so a missing module or function is an error naming the key. Importing a plugin
runs its code: it is the user's own code, named in their own config.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, ValidationError, field_validator

from tuneforge.config.schema import Section
from tuneforge.errors import UserError
from tuneforge.registry import Registry, closest

__all__ = [
    "BUILTIN_SPECS",
    "REWARDS",
    "ExactAnswerReward",
    "FormatReward",
    "FunctionReward",
    "LengthReward",
    "RewardModelReward",
    "RewardFn",
    "RewardSpec",
    "exact_answer",
    "format_match",
    "length_reward",
    "load_plugin",
    "resolve_rewards",
    "reward_function",
    "reward_names",
    "score_answer",
]

RewardFn = Callable[..., float]
REWARDS: Registry[RewardFn] = Registry("reward")

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _numbers(text: str) -> list[str]:
    return _NUMBER.findall(_THOUSANDS.sub("", text))


@REWARDS.register("exact_answer")
def exact_answer(completion: str, reference: str, prompt: str = "", **keys: Any) -> float:
    """1.0 when the completion's last number equals a numeric reference (by value), or, for any other reference,
    when the stripped, case-folded completion equals the stripped, case-folded reference; else 0.0."""
    wanted = _THOUSANDS.sub("", reference.strip())
    if _NUMBER.fullmatch(wanted):
        found = _numbers(completion)
        return float(bool(found) and math.isclose(float(found[-1]), float(wanted), rel_tol=0.0, abs_tol=1e-9))
    return float(completion.strip().casefold() == reference.strip().casefold())


@REWARDS.register("format")
def format_match(
    completion: str, reference: str = "", prompt: str = "", *, pattern: str, match: str = "search", **keys: Any
) -> float:
    """1.0 when `pattern` matches the stripped completion (`match`: search anywhere, or full), else 0.0."""
    matcher = re.fullmatch if match == "full" else re.search
    return float(matcher(pattern, completion.strip(), flags=re.DOTALL) is not None)


@REWARDS.register("length")
def length_reward(
    completion: str, reference: str = "", prompt: str = "", *, target: int, scale: int | None = None, **keys: Any
) -> float:
    """1.0 at `target` characters, falling linearly to 0.0 at `scale` characters away (default: target, ≥ 1)."""
    distance = abs(len(completion.strip()) - target)
    return max(0.0, 1.0 - distance / (scale or max(target, 1)))


# ---------------------------------------------------------------------------------------------------- config


WEIGHT_HELP = "Factor of this reward in an answer's score (the weighted sum of every reward)."


class _RewardBase(Section):
    """Base of the `method.rewards` entries; each declares its keys and then its `weight`."""


class ExactAnswerReward(_RewardBase):
    """`{name: exact_answer}`: the answer equals the data's reference answer."""

    name: Literal["exact_answer"] = Field(
        "exact_answer",
        description="1.0 when the completion's last number equals a numeric reference answer, or the whole "
        "completion (case-folded) equals a text one.",
    )
    weight: float = Field(1.0, description=WEIGHT_HELP)


class FormatReward(_RewardBase):
    """`{name: format, pattern}`: the answer matches a regular expression."""

    name: Literal["format"] = Field("format", description="1.0 when `pattern` matches the completion.")
    pattern: str = Field(description="Python regular expression (re syntax; `.` also matches newlines).")
    match: Literal["full", "search"] = Field(
        "search", description="search: the pattern may match anywhere; full: it must match the whole completion."
    )
    weight: float = Field(1.0, description=WEIGHT_HELP)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        return value


class LengthReward(_RewardBase):
    """`{name: length, target}`: answers near a length in characters."""

    name: Literal["length"] = Field(
        "length", description="1.0 at `target` characters, falling linearly with the distance from it."
    )
    target: int = Field(ge=0, description="Wanted length in characters of the stripped completion.")
    scale: int | None = Field(
        None, ge=1, description="Distance in characters at which the reward reaches 0 (default: target, at least 1)."
    )
    weight: float = Field(1.0, description=WEIGHT_HELP)


class FunctionReward(_RewardBase):
    """`{function: "module:callable"}`: a user function from a module listed in `plugins`."""

    function: str = Field(
        description="'module:callable' with fn(completion, reference, prompt) -> float; module is a file or "
        "importable module listed in the top-level plugins (its code runs when the config is checked)."
    )
    weight: float = Field(1.0, description=WEIGHT_HELP)
    _fn: RewardFn | None = PrivateAttr(None)

    def resolve(self, plugins: list[str] | None, key: str) -> RewardFn:
        """Import the function from its plugin (once) and keep it; UserErrors name `key`."""
        if self._fn is None:
            self._fn = _function_of(self.function, plugins, key)
        return self._fn

    @field_validator("function")
    @classmethod
    def _has_colon(cls, value: str) -> str:
        module, sep, attribute = value.rpartition(":")
        if not sep or not module or not attribute:
            raise ValueError(f"{value!r} must look like 'module:callable' (e.g. my_rewards.py:brevity)")
        return value


class RewardModelReward(_RewardBase):
    """`{name: reward_model, path}`: the score of a trained reward model (a `method.name=reward` run)."""

    name: Literal["reward_model"] = Field("reward_model", description="The score of a trained reward model.")
    path: str = Field(description="Run directory of a method.name=reward run (its model/reward_head.safetensors).")
    weight: float = Field(1.0, description=WEIGHT_HELP)


BUILTIN_SPECS: dict[str, type[_RewardBase]] = {
    "exact_answer": ExactAnswerReward,
    "format": FormatReward,
    "length": LengthReward,
    "reward_model": RewardModelReward,
}


def _explain(err: ValidationError, spec: type[_RewardBase], label: str) -> str:
    """One line per problem of a reward entry, with did-you-mean for unknown keys."""
    keys = list(spec.model_fields)
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            hint = closest(key, keys)
            fix = f" Did you mean {hint!r}?" if hint else ""
            lines.append(f"unknown key {key!r} for reward {label}.{fix} Valid keys: {', '.join(keys)}")
        else:
            cause = (item.get("ctx") or {}).get("error")
            lines.append(f"{key}: {cause if isinstance(cause, ValueError) else item['msg']}")
    return "; ".join(lines)


def _parse_spec(value: Any) -> Any:
    """A `method.rewards` entry (a mapping) as the config class of its reward; instances pass unchanged."""
    if isinstance(value, _RewardBase) or not isinstance(value, dict):
        return value
    if "function" in value:
        if "name" in value:
            raise ValueError("give either name (a built-in reward) or function (your own), not both")
        spec: type[_RewardBase] = FunctionReward
        label = repr(value["function"])
    else:
        if "name" not in value:
            raise ValueError(f"each reward needs a name ({', '.join(BUILTIN_SPECS)}) or a function 'module:callable'")
        try:
            spec = BUILTIN_SPECS[str(value["name"])]
        except KeyError:
            hint = closest(str(value["name"]), list(BUILTIN_SPECS))
            fix = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(f"unknown reward {value['name']!r}.{fix} Known: {', '.join(BUILTIN_SPECS)}") from None
        label = repr(value["name"])
    try:
        return spec.model_validate(value)
    except ValidationError as err:
        raise ValueError(_explain(err, spec, label)) from None


RewardSpec = Annotated[
    ExactAnswerReward | FormatReward | LengthReward | RewardModelReward | FunctionReward, BeforeValidator(_parse_spec)
]


# ---------------------------------------------------------------------------------------------------- plugins


def _plugin_file(entry: str) -> Path | None:
    """The Python file a `plugins` entry names (relative to the working directory), or None for a module name."""
    path = Path(entry).expanduser()
    return path.resolve() if entry.endswith(".py") or path.is_file() else None


def load_plugin(entry: str) -> Any:
    """Import a `plugins` entry: a Python file by its path (once per file), or an importable module by name."""
    path = _plugin_file(entry)
    if path is None:
        return importlib.import_module(entry)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    name = f"tuneforge_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _names_entry(module: str, entry: str) -> bool:
    """Whether `module` (of 'module:callable') refers to the `plugins` entry `entry`."""
    if module == entry:
        return True
    path, named = _plugin_file(entry), _plugin_file(module)
    if path is None:
        return False
    return module in (path.stem, path.name) or named == path


def _plugin_for(module: str, plugins: list[str] | None, key: str) -> str:
    """The `plugins` entry that `module` names (any importable module or file when plugins is None)."""
    if plugins is None:
        return module
    entry = next((p for p in plugins if _names_entry(module, p)), None)
    if entry is None:
        listed = ", ".join(plugins) if plugins else "none"
        raise UserError(
            f"{key}: module {module!r} is not listed in the top-level plugins (listed: {listed}); add its file or "
            f"module name, e.g. plugins: [{module if module.endswith('.py') else module + '.py'}]"
        )
    return entry


def _function_of(target: str, plugins: list[str] | None, key: str) -> RewardFn:
    """The callable `target` ('module:callable') names, imported from its plugin; UserErrors name `key`."""
    module_name, _, attribute = target.rpartition(":")
    entry = _plugin_for(module_name, plugins, key)
    try:
        module = load_plugin(entry)
    except Exception as err:
        raise UserError(f"{key}: cannot import plugin {entry!r} ({type(err).__name__}: {err})") from None
    fn = getattr(module, attribute, None)
    if fn is None:
        public = [n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))]
        hint = closest(attribute, public)
        fix = f" Did you mean {hint!r}?" if hint else ""
        raise UserError(f"{key}: plugin {entry!r} has no function {attribute!r}.{fix}")
    if not callable(fn):
        raise UserError(f"{key}: {target!r} is not callable")
    _check_signature(fn, target, key)
    return fn


def _check_signature(fn: RewardFn, target: str, key: str) -> None:
    try:
        inspect.signature(fn).bind("completion", "reference", "prompt")
    except TypeError:
        raise UserError(f"{key}: {target!r} must accept (completion, reference, prompt) and return a float") from None
    except ValueError:
        pass  # no signature to inspect (some builtins): trust it


def resolve_rewards(specs: list[Any], plugins: list[str] | None, key: str = "method.rewards") -> None:
    """Import the function of every `function:` entry from its plugin and keep it on the entry.

    `plugins` is the config's top-level list; None allows any file or importable module (for tests and APIs).
    """
    for index, spec in enumerate(specs):
        if isinstance(spec, FunctionReward):
            spec.resolve(plugins, f"{key}[{index}].function")


def reward_function(spec: Any) -> tuple[RewardFn, dict[str, Any]]:
    """The function of a reward entry and the keyword arguments its own config keys give it."""
    if isinstance(spec, FunctionReward):
        return spec.resolve(None, "method.rewards"), {}
    return REWARDS.get(spec.name), spec.model_dump(exclude={"name", "weight"})


def score_answer(specs: list[Any], completion: str, reference: str, prompt: str) -> tuple[float, list[float]]:
    """(weighted sum of the rewards, each entry's own unweighted reward) of one completion."""
    parts = []
    for spec in specs:
        fn, keys = reward_function(spec)
        parts.append(float(fn(completion, reference, prompt, **keys)))
    return sum(spec.weight * part for spec, part in zip(specs, parts, strict=True)), parts


def reward_names(specs: list[Any]) -> list[str]:
    """The metric name of each entry: reward_<name> (a function: its name), numbered from the second repeat on."""
    names: list[str] = []
    for spec in specs:
        base = "reward_" + (spec.function.rpartition(":")[2] if isinstance(spec, FunctionReward) else spec.name)
        name, count = base, 1
        while name in names:
            count += 1
            name = f"{base}_{count}"
        names.append(name)
    return names
