"""tuneforge.config (YAML + overrides → typed, strictly validated RunConfig) and tuneforge.registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import tuneforge.methods  # noqa: F401  (registers the adapter and method parameters configs are checked against)
from tuneforge.config import RunConfig, load_config, parse_overrides
from tuneforge.config.load import config_from_dict, dump_config, load_saved_config
from tuneforge.errors import UserError
from tuneforge.models.adapters.freeze import FreezeParams
from tuneforge.models.adapters.full import FullParams
from tuneforge.models.adapters.lora import LoraParams
from tuneforge.registry import Registry, closest


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def user_error(path, overrides=None) -> str:
    with pytest.raises(UserError) as info:
        load_config(path, overrides)
    return str(info.value)


# ---------------------------------------------------------------------------------------------------- loading


def test_yaml_values_land_in_typed_sections(tmp_path):
    path = write_yaml(
        tmp_path / "run.yaml",
        """
model:
  name_or_path: /models/tiny
  dtype: float32
data:
  train: identity
  variables: {name: Conch, author: ACME}
  cutoff_len: 256
  val_size: 5
adapter:
  name: lora
  r: 4
  target_modules: [q_proj, v_proj]
train:
  learning_rate: 2.0e-4
  epochs: 2
  batch_size: 8
output:
  dir: runs/x
""",
    )
    config = load_config(path)
    assert isinstance(config, RunConfig)
    assert config.model.name_or_path == "/models/tiny"
    assert config.model.dtype == "float32"
    assert config.data.train == ["identity"]  # a single string becomes a one-item list
    assert config.data.variables == {"name": "Conch", "author": "ACME"}
    assert config.data.cutoff_len == 256
    assert config.data.val_size == 5.0
    assert isinstance(config.adapter, LoraParams)
    assert config.adapter.r == 4
    assert config.adapter.alpha == 16
    assert config.adapter.target_modules == ["q_proj", "v_proj"]
    assert config.train.learning_rate == 2.0e-4
    assert config.train.epochs == 2.0 and isinstance(config.train.epochs, float)
    assert config.train.batch_size == 8
    assert config.train.grad_accum == 2  # untouched default
    assert config.output.dir == "runs/x"


def test_overrides_apply_on_top_of_the_file(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "train:\n  epochs: 5\n  batch_size: 2\ndata:\n  train: [x.json]\n")
    config = load_config(path, ["train.epochs=1", "data.train=[a.json,b.json]", "adapter.r=16"])
    assert config.train.epochs == 1.0
    assert config.train.batch_size == 2  # sibling key from the file survives the deep merge
    assert config.data.train == ["a.json", "b.json"]
    assert isinstance(config.adapter, LoraParams)
    assert config.adapter.r == 16
    assert config.adapter.alpha == 16


def test_overrides_without_a_file():
    config = load_config(None, ["data.variables.name=Conch", "model.attn_implementation=eager"])
    assert config.data.variables == {"name": "Conch"}
    assert config.model.attn_implementation == "eager"


def test_parse_overrides_nests_and_parses_yaml_values():
    assert parse_overrides(["train.epochs=1", "train.learning_rate=3.0e-4", "data.train=[a.json, b.json]"]) == {
        "train": {"epochs": 1, "learning_rate": 3e-4},
        "data": {"train": ["a.json", "b.json"]},
    }
    assert parse_overrides(["output.dir="]) == {"output": {"dir": ""}}
    assert parse_overrides(["data.replay.limit=3"]) == {"data": {"replay": {"limit": 3}}}
    # YAML 1.1 reads 3e-4 as a string; the float field still accepts it
    assert load_config(None, ["train.learning_rate=3e-4"]).train.learning_rate == 3e-4


def test_defaults_match_the_documented_contract(tmp_path):
    for config in (load_config(None), load_config(write_yaml(tmp_path / "empty.yaml", ""))):
        assert config.model.name_or_path == "smollm2-135m-instruct"
        assert config.data.format == "auto"
        assert config.data.cutoff_len == 512
        assert config.data.val_size == 0.1
        assert config.data.train == []
        assert config.data.packing is True
        assert config.data.replay is None
        assert config.method.name == "sft"
        assert isinstance(config.adapter, LoraParams)
        assert config.adapter.name == "lora"
        assert config.adapter.r == 8
        assert config.adapter.alpha == 16
        assert config.adapter.dropout == 0.0
        assert config.adapter.target_modules == "all-linear"
        assert config.train.learning_rate == 1e-4
        assert config.train.epochs == 3
        assert config.train.max_steps == -1
        assert config.train.batch_size == 4
        assert config.train.grad_accum == 2
        assert config.train.max_grad_norm == 1.0
        assert config.train.scheduler == "cosine"
        assert config.train.warmup_ratio == 0.1
        assert config.train.seed == 42


# ---------------------------------------------------------------------------------------------------- errors


def test_misspelled_key_names_file_key_and_fix(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "train: {learnin_rate: 1}\n")
    message = user_error(path)
    assert str(path) in message
    assert "train.learnin_rate" in message
    assert "Did you mean train.learning_rate?" in message


def test_unknown_section_suggests_the_closest_section(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "trian:\n  epochs: 1\n")
    message = user_error(path)
    assert str(path) in message
    assert "'trian'" in message
    assert "Did you mean train?" in message


def test_unknown_nested_key_in_optional_section_is_suggested(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "data:\n  replay:\n    promts: general_prompts\n")
    message = user_error(path)
    assert "data.replay.promts" in message
    assert "Did you mean data.replay.prompts?" in message


def test_unknown_adapter_parameter_names_key_and_file(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "adapter: {name: lora, rank: 8}\n")
    message = user_error(path)
    assert str(path) in message
    assert "adapter.rank" in message

    path = write_yaml(tmp_path / "run2.yaml", "adapter: {name: lora, alhpa: 8}\n")
    message = user_error(path)
    assert "adapter.alhpa" in message
    assert "Did you mean adapter.alpha?" in message


def test_parameter_of_another_adapter_is_rejected(tmp_path):
    message = user_error(None, ["adapter.name=full", "adapter.r=8"])
    assert "adapter.r" in message
    message = user_error(None, ["adapter.name=freeze", "adapter.alpha=8"])
    assert "adapter.alpha" in message


def test_unknown_adapter_name_suggests_lora(tmp_path):
    message = user_error(None, ["adapter.name=lorra"])
    assert "adapter.name" in message
    assert "'lorra'" in message
    assert "Did you mean 'lora'?" in message
    path = write_yaml(tmp_path / "run.yaml", "adapter:\n  name: lorra\n")
    assert str(path) in user_error(path)


def test_wrong_type_names_the_key():
    message = user_error(None, ["train.epochs=abc"])
    assert "train.epochs" in message
    assert "'abc'" in message


def test_out_of_range_and_bad_literal_name_the_key():
    assert "train.batch_size" in user_error(None, ["train.batch_size=0"])
    assert "train.scheduler" in user_error(None, ["train.scheduler=cosin"])
    assert "data.format" in user_error(None, ["data.format=csv"])


@pytest.mark.parametrize("override", ["train.epochs", "epochs=1", "=1"])
def test_malformed_override_errors(override):
    with pytest.raises(UserError, match="section.key=value"):
        load_config(None, [override])


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "train:\n  epochs: 1\n\tbatch_size: 2\n")
    message = user_error(path)
    assert message.startswith(f"{path}:3: invalid YAML")


def test_missing_file_and_non_mapping_top_level(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert str(missing) in user_error(missing)
    path = write_yaml(tmp_path / "list.yaml", "- a\n- b\n")
    assert "top level must be a mapping" in user_error(path)


# ---------------------------------------------------------------------------------------------------- adapters


def test_freeze_adapter_params_validate(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "adapter:\n  name: freeze\n  trainable_layers: 3\n")
    config = load_config(path)
    assert isinstance(config.adapter, FreezeParams)
    assert config.adapter.trainable_layers == 3
    assert config.adapter.train_embeddings is False
    default = load_config(None, ["adapter.name=freeze"])
    assert isinstance(default.adapter, FreezeParams) and default.adapter.trainable_layers == 2
    assert "adapter.trainable_layers" in user_error(None, ["adapter.name=freeze", "adapter.trainable_layers=0"])


def test_full_adapter_validates():
    config = load_config(None, ["adapter.name=full"])
    assert isinstance(config.adapter, FullParams)
    assert config.adapter.model_dump() == {"name": "full"}


def test_config_from_dict_names_its_source():
    with pytest.raises(UserError, match=r"^my-source: unknown key 'model.nam'"):
        config_from_dict({"model": {"nam": "x"}}, source="my-source")


# ---------------------------------------------------------------------------------------------------- dump


@pytest.mark.parametrize(
    "overrides",
    [
        ["adapter.r=16", "adapter.alpha=32", "adapter.target_modules=[q_proj]", "train.epochs=1"],
        ["adapter.name=freeze", "adapter.trainable_layers=1", "adapter.train_embeddings=true"],
        ["adapter.name=full", "data.train=[a.json]", "data.replay.limit=3", "data.variables.name=Conch"],
    ],
)
def test_dump_config_round_trips(tmp_path, overrides):
    config = load_config(None, overrides)
    text = dump_config(config)
    dumped = yaml.safe_load(text)
    # every adapter parameter is written out, not just the base class' `name`
    assert dumped["adapter"] == config.adapter.model_dump(mode="json")
    path = write_yaml(tmp_path / "config.yaml", text)
    reloaded = load_config(path)
    assert type(reloaded.adapter) is type(config.adapter)
    assert reloaded.adapter == config.adapter
    assert reloaded.model_dump(serialize_as_any=True) == config.model_dump(serialize_as_any=True)
    assert dump_config(reloaded) == text


def test_dump_config_keeps_non_default_lora_rank(tmp_path):
    text = dump_config(load_config(None, ["adapter.r=16"]))
    assert yaml.safe_load(text)["adapter"] == {
        "name": "lora",
        "r": 16,
        "alpha": 16.0,
        "dropout": 0.0,
        "target_modules": "all-linear",
        "use_dora": False,
        "use_rslora": False,
        "init": "default",
        "loraplus_lr_ratio": None,
        "modules_to_save": None,
    }


# ---------------------------------------------------------------------------------------------------- registry


def test_registry_get_names_and_double_registration():
    reg: Registry[int] = Registry("widget")
    reg.register("zeta")(1)
    reg.register("alpha")(2)
    reg.register("gamma")(3)
    assert reg.names() == ["alpha", "gamma", "zeta"]
    assert reg.get("gamma") == 3
    assert "alpha" in reg and "beta" not in reg

    with pytest.raises(UserError) as info:
        reg.get("gama")
    assert str(info.value) == "unknown widget 'gama'. Did you mean 'gamma'? Known: alpha, gamma, zeta."

    with pytest.raises(UserError) as info:
        reg.get("xyz")
    assert "Did you mean" not in str(info.value)
    assert "Known: alpha, gamma, zeta." in str(info.value)

    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha")(4)
    assert reg.get("alpha") == 2


def test_closest():
    assert closest("lorra", ["full", "freeze", "lora"]) == "lora"
    assert closest("zzz", ["full", "freeze", "lora"]) is None


def test_builtin_registries_list_their_names():
    from tuneforge.data.formats import FORMATS
    from tuneforge.methods import METHODS
    from tuneforge.models.adapters import ADAPTERS

    assert ADAPTERS.names() == ["adapter", "freeze", "full", "ia3", "lora", "prefix", "prompt", "ptuning", "qlora"]
    assert FORMATS.names() == [
        "alpaca",
        "classification",
        "llamafactory_v1",
        "openai",
        "prompt_completion",
        "sharegpt",
        "text",
    ]
    assert "sft" in METHODS.names()
    with pytest.raises(UserError, match="Did you mean 'sharegpt'"):
        FORMATS.get("sharegtp")


def test_a_saved_run_config_with_a_removed_key_still_loads(tmp_path: Path) -> None:
    saved = yaml.safe_load(dump_config(RunConfig()))
    saved["eval"]["judge_api_key_env"] = "OPENAI_API_KEY"  # written by an older tuneforge into every run
    saved["train"]["learning_rate"] = 0.123
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved), encoding="utf-8")
    with pytest.raises(UserError, match="'eval.judge_api_key_env' was removed"):
        load_config(path)  # a config a user writes is held to the current keys
    assert load_saved_config(path).train.learning_rate == 0.123
    saved["train"]["learnin_rate"] = 1
    path.write_text(yaml.safe_dump(saved), encoding="utf-8")
    with pytest.raises(UserError, match="train.learnin_rate"):
        load_saved_config(path)  # only removed keys are forgiven
