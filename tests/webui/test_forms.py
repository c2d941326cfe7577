"""The training form is generated from the config schema: every field, its type, default and help, and the
round trip form ↔ config that goes through the CLI's own loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import tuneforge.methods  # noqa: F401  (registers every method's and adapter's parameters)
from tuneforge.config.load import config_from_dict, load_config
from tuneforge.config.schema import RunConfig
from tuneforge.config.variants import ADAPTER_PARAMS, METHOD_PARAMS
from tuneforge.errors import UserError
from tuneforge.webui.configs import FORM_SOURCE, form_config
from tuneforge.webui.forms import (
    assemble,
    default_values,
    field_spec,
    form_fields,
    format_value,
    parse_value,
    values_from_config,
)
from tuneforge.webui.i18n import field_help
from tuneforge.webui.workspace import Workspace

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def specs():
    return form_fields()


def by_key(specs, key):
    return next(s for s in specs if s.key == key)


def test_every_schema_field_is_a_form_field_and_nothing_else(specs) -> None:
    expected = set()
    for section, info in RunConfig.model_fields.items():
        if section in ("method", "adapter"):
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            expected |= {f"{section}.{name}" for name in annotation.model_fields}
        else:
            expected.add(section)
    for section, registry in (("method", METHOD_PARAMS), ("adapter", ADAPTER_PARAMS)):
        for variant in registry.names():
            expected |= {f"{section}.{variant}.{n}" for n in registry.get(variant).model_fields if n != "name"}
    keys = [s.key for s in specs]
    assert len(keys) == len(set(keys))
    assert set(keys) == expected
    assert {"method.dpo.beta", "method.grpo.rewards", "adapter.lora.r", "adapter.qlora.compute_dtype"} <= set(keys)


def test_each_method_and_adapter_gets_its_own_fields(specs) -> None:
    dpo = [s.name for s in specs if s.variant == "dpo"]
    assert dpo == ["loss", "beta", "label_smoothing", "gamma", "sft_weight", "precompute_reference"]
    kto = [s.name for s in specs if s.variant == "kto"]
    assert kto == ["beta", "desirable_weight", "undesirable_weight"]
    assert [s.path for s in specs if s.variant == "kto"][0] == ("method", "beta")  # the config key has no variant
    assert [s for s in specs if s.variant in ("sft", "pretrain", "full")] == []


def test_widget_kinds_choices_and_defaults_come_from_the_annotations(specs) -> None:
    lr = by_key(specs, "train.learning_rate")
    assert (lr.kind, lr.default, lr.optional) == ("float", 1.0e-4, False)
    assert by_key(specs, "data.format").choices == (
        "auto",
        "alpaca",
        "sharegpt",
        "openai",
        "llamafactory_v1",
        "prompt_completion",
        "text",
        "classification",
    )
    checkpointing = by_key(specs, "train.gradient_checkpointing")
    assert (checkpointing.kind, checkpointing.choices) == ("choice", ("auto", "true", "false"))
    report_to = by_key(specs, "train.report_to")
    assert (report_to.kind, report_to.choices, report_to.default) == ("multi", ("tensorboard", "wandb", "mlflow"), [])
    warmup = by_key(specs, "train.warmup_steps")
    assert (warmup.kind, warmup.optional, warmup.default) == ("int", True, None)
    target = by_key(specs, "adapter.lora.target_modules")
    assert (target.kind, target.str_or_list, target.default) == ("list", True, "all-linear")
    assert by_key(specs, "method.grpo.rewards").default == [{"name": "exact_answer", "weight": 1.0}]
    assert by_key(specs, "method.grpo.rewards").kind == "yaml"
    assert (by_key(specs, "data.replay").kind, by_key(specs, "data.replay").optional) == ("yaml", True)
    teacher = by_key(specs, "method.distill.teacher")
    assert (teacher.required, teacher.default) == (True, None)
    assert by_key(specs, "model.trust_remote_code").default is False  # visible and off by default


def test_help_is_the_schema_description_with_its_key(specs) -> None:
    for spec in specs:
        info = (
            RunConfig.model_fields[spec.path[0]]
            if len(spec.path) == 1
            else (METHOD_PARAMS if spec.path[0] == "method" else ADAPTER_PARAMS)
            .get(spec.variant)
            .model_fields[spec.name]
            if spec.variant
            else RunConfig.model_fields[spec.path[0]].annotation.model_fields[spec.name]
        )
        assert spec.help == info.description, spec.key
        assert field_help(spec, "en") == f"{info.description} [{'.'.join(spec.path)}]"


def test_the_untouched_form_is_the_default_config(specs) -> None:
    raw = assemble(specs, default_values(specs), "sft", "lora")
    assert raw == {
        "method": {"name": "sft"},
        "adapter": {"name": "lora"},
        "model": {"name_or_path": "smollm2-135m-instruct"},
        "data": {"train": []},
        "output": {"dir": "runs/run"},
    }
    assert config_from_dict(raw).model_dump() == config_from_dict({}).model_dump()


def test_only_changed_keys_of_the_chosen_variants_are_written(specs) -> None:
    values = default_values(specs)
    values.update({"train.learning_rate": 0.002, "method.dpo.beta": 0.3, "method.kto.beta": 0.9, "data.val_size": 0.1})
    values["adapter.lora.target_modules"] = "q_proj, v_proj"
    raw = assemble(specs, values, "dpo", "lora")
    assert raw["method"] == {"name": "dpo", "beta": 0.3}  # kto's beta is another method's: not written
    assert raw["adapter"] == {"name": "lora", "target_modules": ["q_proj", "v_proj"]}
    assert raw["train"] == {"learning_rate": 0.002}
    assert "val_size" not in raw["data"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_config_round_trips_through_the_form(example: Path, specs) -> None:
    config = load_config(example)
    values = values_from_config(specs, config)
    raw = assemble(specs, values, config.method.name, config.adapter.name)
    again = config_from_dict(raw)
    assert again.model_dump(mode="json", serialize_as_any=True) == config.model_dump(
        mode="json", serialize_as_any=True
    )


@pytest.mark.parametrize(
    ("key", "shown", "value"),
    [
        ("train.gradient_checkpointing", "true", True),
        ("train.gradient_checkpointing", "auto", "auto"),
        ("train.resume", "auto", "auto"),
        ("train.resume", "false", False),
        ("train.resume", "runs/a/checkpoints/step-4", "runs/a/checkpoints/step-4"),
        ("train.warmup_steps", "", None),
        ("train.warmup_steps", "12", 12),
        ("train.batch_size", 8.0, 8),
        ("data.mix_ratios", "7, 3", [7, 3]),
        ("data.mix_ratios", "0.5, 1.5", [0.5, 1.5]),
        ("adapter.lora.target_modules", "all-linear", "all-linear"),
        ("adapter.lora.target_modules", "q_proj", ["q_proj"]),
        ("data.variables", "{name: Conch, author: Lab}", {"name": "Conch", "author": "Lab"}),
        ("data.replay", "", None),
        ("method.grpo.rewards", "[{name: format, pattern: '^A'}]", [{"name": "format", "pattern": "^A"}]),
        ("eval.questions", "", None),
    ],
)
def test_widget_values_become_config_values_and_back(specs, key: str, shown, value) -> None:
    spec = by_key(specs, key)
    assert parse_value(spec, shown) == value
    if shown != 8.0:
        assert parse_value(spec, format_value(spec, value)) == value


@pytest.mark.parametrize(
    ("key", "shown", "message"),
    [
        ("train.batch_size", "1.5", "train.batch_size: '1.5' must be a whole number"),
        ("train.learning_rate", "fast", "train.learning_rate: 'fast' is not a number"),
        ("data.variables", "{name: [", "data.variables: not valid YAML"),
        ("method.distill.teacher", "", "method.distill.teacher is required"),
        ("data.format", "xml", "data.format: 'xml' is not one of auto, alpaca"),
    ],
)
def test_bad_widget_values_name_the_field(specs, key: str, shown, message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        parse_value(by_key(specs, key), shown)


def test_schema_errors_are_the_command_lines(specs, tmp_path: Path) -> None:
    """The page validates with the CLI's loader: the same YAML gives the same message, source aside."""
    values = default_values(specs)
    values.update({"train.learning_rate": -1.0, "output.dir": "runs/x"})
    with pytest.raises(UserError) as page:
        form_config(specs, values, "sft", "lora", Workspace(tmp_path))
    raw = assemble(specs, values, "sft", "lora")
    path = tmp_path / "same.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(UserError) as cli:
        load_config(path)
    assert "train.learning_rate: Input should be greater than 0" in str(page.value)
    assert str(page.value).replace(FORM_SOURCE, str(path)) == str(cli.value)


def test_a_field_spec_of_a_new_schema_field_needs_no_code() -> None:
    from pydantic import BaseModel, Field

    class NewSection(BaseModel):
        ratio: float | None = Field(None, gt=0, description="A new knob.")

    spec = field_spec(("train", "ratio"), NewSection.model_fields["ratio"])
    assert (spec.kind, spec.optional, spec.help, spec.key) == ("float", True, "A new knob.", "train.ratio")
