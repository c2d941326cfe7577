"""Export through the real exporters: every mergeable adapter becomes plain weights with the adapter model's
outputs; runs of adapters that cannot be merged are refused with the way out, before anything is written.

Which adapters are which comes from the adapter registry (`mergeable` on each registration). Each run is built in
this process on the tiny Llama: the adapter is attached, its trainable parameters are moved off their start values
(so the adapter changes the logits), and the run directory is written the way `tuneforge train` writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tuneforge.config.load import config_from_dict
from tuneforge.errors import UserError
from tuneforge.export import EXPORTERS, ExportOptions, run_export
from tuneforge.models.adapters import ADAPTERS, AdapterSpec
from tuneforge.models.adapters.base import remember_adapter
from tuneforge.models.load import load_model
from tuneforge.models.rundir import RunLayout, prepare_run_dir, save_model, write_status

MERGEABLE = [name for name in ADAPTERS.names() if ADAPTERS.get(name).mergeable]
NOT_MERGEABLE = [name for name in ADAPTERS.names() if not ADAPTERS.get(name).mergeable]
# Settings that change how a merge must work, beyond each adapter's defaults (keys the adapter's params lack are
# not used): weight-decomposed and rank-stabilised LoRA, and a trained copy of the tied input embeddings.
HARDER = {"use_dora": True, "use_rslora": True, "modules_to_save": ["embed_tokens"]}
INPUT = torch.tensor([[1, 40, 41, 42, 43, 44, 2], [5, 17, 42, 99, 250, 7, 3]])
ATOL = 1e-4  # float32 throughout; merged weights round differently from the adapter's separate matmuls


def _logits(model: Any) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=INPUT, attention_mask=torch.ones_like(INPUT), use_cache=False).logits


def _builder(name: str) -> str:
    """The adapter that builds `name`'s saved form on any machine: itself, or for an adapter that needs a special
    (quantised, CUDA-only) base model, the adapter of the same peft type, whose saved adapter it shares."""
    spec = ADAPTERS.get(name)
    if spec.load_kwargs is None:
        return name
    twins = [
        n for n in ADAPTERS.names() if ADAPTERS.get(n).peft_type == spec.peft_type and not ADAPTERS.get(n).load_kwargs
    ]
    assert twins, f"adapter {name!r} needs a special base model and no other adapter saves its peft type"
    return twins[0]


def _adapted_run(name: str, settings: dict[str, Any], base_dir: Path, root: Path) -> tuple[Path, Any]:
    """(run directory, the adapter model it holds) for adapter `name` with `settings` on the model in `base_dir`."""
    spec: AdapterSpec = ADAPTERS.get(name)
    params = spec.params.model_validate({**settings, "name": name})
    build = _builder(name)
    build_spec = ADAPTERS.get(build)
    fields = set(build_spec.params.model_fields)
    build_params = build_spec.params.model_validate({**params.model_dump(include=fields), "name": build})
    loaded = load_model(str(base_dir), dtype="float32")
    torch.manual_seed(0)
    model = remember_adapter(build_spec.apply(loaded.model, build_params), params)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    config = config_from_dict(
        {"model": {"name_or_path": str(base_dir)}, "adapter": params.model_dump(), "output": {"dir": str(root)}}
    )
    run = prepare_run_dir(config)
    save_model(model, loaded.tokenizer, RunLayout(run).model)
    write_status(run, "finished", steps=1)
    return run, model


def _variants() -> list[Any]:
    cases = [pytest.param(name, {}, id=name) for name in MERGEABLE]
    for name in MERGEABLE:
        harder = {key: value for key, value in HARDER.items() if key in ADAPTERS.get(name).params.model_fields}
        if harder:
            cases.append(pytest.param(name, harder, id=f"{name}-{'-'.join(harder)}"))
    return cases


@pytest.mark.scenario("merge_preserves")
@pytest.mark.parametrize(("name", "settings"), _variants())
def test_merged_export_gives_the_adapter_models_logits(
    name: str, settings: dict[str, Any], tiny_llama_dir: Path, tmp_path: Path
) -> None:
    run, model = _adapted_run(name, settings, tiny_llama_dir, tmp_path / "run")
    expected = _logits(model)
    base = load_model(str(tiny_llama_dir), dtype="float32").model
    assert (expected - _logits(base)).abs().max() > 0.05  # the adapter matters: dropping it would fail below

    out = tmp_path / "merged"
    run_export(str(run), out, "hf", ExportOptions(dtype="float32"))
    merged, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert {key: list(value) for key, value in info.items() if value} == {}  # nothing missing or unexpected
    assert "peft" not in type(merged).__module__
    base_keys = set(load_file(tiny_llama_dir / "model.safetensors"))
    assert set(load_file(out / "model.safetensors")) == base_keys  # the base architecture, no adapter tensors
    torch.testing.assert_close(_logits(merged), expected, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def unmergeable_runs(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unmergeable")
    return {name: _adapted_run(name, {}, tiny_llama_dir, root / name)[0] for name in NOT_MERGEABLE}


@pytest.mark.parametrize("export_format", EXPORTERS.names())
@pytest.mark.parametrize("name", NOT_MERGEABLE)
def test_runs_of_adapters_that_cannot_merge_are_refused(
    name: str, export_format: str, unmergeable_runs: dict[str, Path], tmp_path: Path
) -> None:
    run = unmergeable_runs[name]
    what = "learned virtual tokens" if ADAPTERS.get(name).virtual_tokens else "extra modules"
    expected = (
        f"{run}: the '{name}' adapter adds {what} at run time, which cannot be merged into plain weights, so this "
        f"run cannot be exported; serve or chat with the run directory itself (`tuneforge serve {run}`), or train "
        f"with a mergeable adapter ({', '.join(MERGEABLE)})"
    )
    with pytest.raises(UserError) as refused:
        run_export(str(run), tmp_path / "out", export_format, ExportOptions())
    assert str(refused.value) == expected
    assert list(tmp_path.iterdir()) == []  # neither the export nor a temporary folder
