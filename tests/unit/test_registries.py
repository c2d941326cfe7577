"""One home for each choice: the config schema, the CLI and the registries name the same things.

The config layer cannot import the layers above it, so its `Literal[...]` choices are checked here against the
registry or constant that owns them; the adapter and method sections are validated against the parameter
classes their registrations provide; CLI `choices` come from the registries.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path

import pytest

import tuneforge.methods  # noqa: F401  (registers every method and adapter)
from tuneforge.cli.main import build_parser
from tuneforge.config.load import config_from_dict
from tuneforge.config.schema import DataSection, MethodParams, ModelSection, Section, TrainSection
from tuneforge.config.variants import ADAPTER_PARAMS, METHOD_PARAMS
from tuneforge.data.formats import FORMATS
from tuneforge.data.render import RenderedSample
from tuneforge.data.templates import TEMPLATES
from tuneforge.errors import UserError
from tuneforge.export import EXPORTERS, GGUF_TYPES
from tuneforge.methods import METHODS
from tuneforge.methods.base import LossSums, Method, register_method
from tuneforge.models.adapters import ADAPTERS
from tuneforge.models.adapters.base import AdapterSpec, register_adapter
from tuneforge.models.adapters.full import FullParams
from tuneforge.models.hf import MODEL_DTYPES
from tuneforge.registry import Registry, import_submodules
from tuneforge.serve.engines import ENGINES
from tuneforge.train.optim import OPTIMIZERS, SCHEDULERS
from tuneforge.train.precision import TRAIN_DTYPES
from tuneforge.train.reporters import REPORTERS
from tuneforge.train.settings import LOOP_TRAIN_KEYS


def literal_choices(section: type[Section], field: str) -> set[str]:
    """The values a `Literal[...]` field (or `list[Literal[...]]`, `Literal | bool`) accepts, as strings."""
    found: set[str] = set()

    def walk(annotation: object) -> None:
        if typing.get_origin(annotation) is typing.Literal:
            found.update(str(value) for value in typing.get_args(annotation))
        else:
            for arg in typing.get_args(annotation):
                walk(arg)

    walk(section.model_fields[field].annotation)
    return found


@pytest.mark.parametrize(
    ("section", "field", "owner"),
    [
        (DataSection, "format", {"auto", *FORMATS.names()}),
        (TrainSection, "optimizer", set(OPTIMIZERS)),
        (TrainSection, "scheduler", set(SCHEDULERS)),
        (TrainSection, "report_to", set(REPORTERS)),
        (TrainSection, "dtype", set(TRAIN_DTYPES)),
        (ModelSection, "dtype", set(MODEL_DTYPES)),
    ],
)
def test_config_choices_match_their_registry(section: type[Section], field: str, owner: set[str]) -> None:
    assert literal_choices(section, field) == owner, (
        f"{section.__name__}.{field} lists other choices than the code that implements them: change both together"
    )


def test_data_template_help_names_every_bundled_template() -> None:
    description = DataSection.model_fields["template"].description or ""
    assert all(name in description for name in TEMPLATES.names()), description


def test_adapter_and_method_sections_are_validated_by_their_registrations() -> None:
    assert ADAPTER_PARAMS.names() == ADAPTERS.names()
    assert METHOD_PARAMS.names() == METHODS.names()
    for name in ADAPTERS.names():
        assert ADAPTER_PARAMS.get(name) is ADAPTERS.get(name).params
        assert ADAPTERS.get(name).params.model_fields["name"].default == name
    for name in METHODS.names():
        assert METHOD_PARAMS.get(name) is METHODS.get(name).params
    with pytest.raises(UserError, match=r"cfg: method.name: unknown method 'sfft'\. Did you mean 'sft'\?"):
        config_from_dict({"method": {"name": "sfft"}}, "cfg")
    with pytest.raises(UserError, match=r"cfg: unknown key 'method.beta' for method 'sft'"):
        config_from_dict({"method": {"name": "sft", "beta": 0.1}}, "cfg")
    with pytest.raises(UserError, match=r"unknown key 'adapter.rr' for adapter 'lora'\. Did you mean adapter.r\?"):
        config_from_dict({"adapter": {"name": "lora", "rr": 4}}, "cfg")


def test_a_registration_whose_params_name_another_plugin_is_refused() -> None:
    with pytest.raises(ValueError, match="declares name 'full'"):
        register_adapter("not-full", AdapterSpec(params=FullParams, apply=lambda m, p: m, saves_full_model=True))

    class OtherParams(MethodParams):
        name: typing.Literal["other"] = "other"

    method = dataclasses.replace(METHODS.get("sft"), params=OtherParams)
    with pytest.raises(ValueError, match="declares name 'other'"):
        register_method("another", method)
    assert "another" not in METHODS and "not-full" not in ADAPTERS


def _choices(parser: argparse.ArgumentParser, verb: str, option: str) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[verb]._actions if option in a.option_strings)
    return list(action.choices)


def test_cli_choices_come_from_the_registries() -> None:
    parser = build_parser()
    assert _choices(parser, "export", "--format") == EXPORTERS.names() == ["gguf", "hf", "ollama"]
    assert _choices(parser, "export", "--gguf-type") == list(GGUF_TYPES)
    assert _choices(parser, "serve", "--engine") == ["auto", *ENGINES.names()]
    assert ENGINES.names() == ["llamacpp", "transformers", "vllm"]


def test_every_train_key_reaches_the_loop_or_is_used_before_it() -> None:
    before_the_loop = {
        "num_threads",
        "return_freed_memory",
        "deterministic",
        "save_steps",
        "save_total_limit",
        "resume",
        "report_to",
        "ewc",
        "replay",
        "fsdp",
    }
    assert set(LOOP_TRAIN_KEYS) | before_the_loop == set(TrainSection.model_fields), (
        "a new train.* key must be a LoopSettings field (same name) or be used in train/run.py before the loop"
    )
    assert not set(LOOP_TRAIN_KEYS) & before_the_loop


def test_a_new_plugin_module_registers_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a plug-in is adding its module: the package's import_submodules finds it."""
    package = tmp_path / "plugins_demo"
    package.mkdir()
    registry: Registry[str] = Registry("demo")
    monkeypatch.setitem(sys.modules, "demo_registry", types.SimpleNamespace(REGISTRY=registry))
    (package / "__init__.py").write_text("")
    (package / "alpha.py").write_text("import demo_registry\ndemo_registry.REGISTRY.register('alpha')('A')\n")
    (package / "beta.py").write_text("import demo_registry\ndemo_registry.REGISTRY.register('beta')('B')\n")
    (package / "_private.py").write_text("raise RuntimeError('private modules are not plug-ins')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_submodules("plugins_demo", [str(package)]) == ["alpha", "beta"]
    assert registry.names() == ["alpha", "beta"]


def test_a_method_declares_its_data_kinds_and_metrics() -> None:
    sft = METHODS.get("sft")
    assert sft.data_kinds == {"chat", "text"}
    sft.check_data("sft", {"chat", "text"})
    with pytest.raises(UserError, match=r"method 'sft' trains on conversations and raw text, but the data holds "):
        sft.check_data("sft", {"chat", "preference"})

    def counting_loss(model, batch, params, models) -> LossSums:  # noqa: ANN001
        return LossSums(batch["input_ids"].sum().float(), {"rows": float(batch["input_ids"].shape[0])})

    demo = Method(
        params=METHOD_PARAMS.get("sft"),
        data_kinds=frozenset({"chat"}),
        collate=sft.collate,
        loss=counting_loss,
        count=sft.count,
        metrics=("rows",),
    )
    objective = demo.bind()
    batch = objective.collate([RenderedSample([1, 2, 3], [-100, 2, 3])], False, 0)
    assert objective.loss(None, batch).metrics == {"rows": 1.0} and objective.count(batch) == 2
