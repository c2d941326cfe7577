"""The grpo method: its rule rewards, group advantages and objective by hand and against TRL 1.16, the prompt /
answer split of its data, plugin reward functions, and one loss on a tiny model."""

from __future__ import annotations

import math
import types
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.config.load import config_from_dict, dump_config
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.errors import UserError
from tuneforge.methods import METHODS, MethodModels
from tuneforge.methods.grpo import (
    GrpoParams,
    answer_means,
    collate_prompts,
    group_advantages,
    split_final_answer,
    token_objective,
)
from tuneforge.methods.rewards import (
    BUILTIN_SPECS,
    REWARDS,
    exact_answer,
    format_match,
    length_reward,
    reward_function,
    reward_names,
    score_answer,
)
from tuneforge.methods.rollout import answer_batch, cut_at_stop, token_log_probs
from tuneforge.models.adapters import ADAPTERS

GRPO = METHODS.get("grpo")


def grpo_config(tmp_path: Path | None = None, **method: Any) -> Any:
    raw: dict[str, Any] = {"method": {"name": "grpo", **method}}
    if "plugins" in method:
        raw["plugins"] = raw["method"].pop("plugins")
    return config_from_dict(raw, "cfg")


# ---------------------------------------------------------------------------------------------------- rewards


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        ("42", "42", 1.0),
        ("The answer is 42.", "42", 1.0),  # the last number of the completion counts
        ("17 + 25 = 42", " 42\n", 1.0),
        ("42, or maybe 41", "42", 0.0),
        ("41", "42", 0.0),
        ("no number here", "7", 0.0),
        ("-3", "-3", 1.0),
        ("It is 2.50", "2.5", 1.0),  # compared by value
        ("about 1,000 of them", "1000", 1.0),  # thousands separators are ignored
        ("  Paris ", "paris", 1.0),  # a text reference: stripped and case-folded
        ("Paris.", "Paris", 0.0),
    ],
)
def test_exact_answer(completion: str, reference: str, expected: float) -> None:
    assert exact_answer(completion, reference, "prompt") == expected


def test_format_searches_or_matches_the_whole_stripped_completion() -> None:
    assert format_match("The answer: 42", "", "", pattern=r"\d+") == 1.0
    assert format_match("The answer: 42", "", "", pattern=r"\d+", match="full") == 0.0
    assert format_match(" 42\n", "", "", pattern=r"\d+", match="full") == 1.0
    assert format_match("<think>a\nb</think> 4", "", "", pattern=r"<think>.*</think>.*", match="full") == 1.0
    assert format_match("nothing", "", "", pattern=r"\d") == 0.0


def test_length_falls_linearly_with_the_distance_in_characters() -> None:
    assert length_reward("abcdefgh", "", "", target=8, scale=4) == 1.0
    assert length_reward("  abcdefghij ", "", "", target=8, scale=4) == 0.5  # stripped: 10 characters
    assert length_reward("abcd", "", "", target=8, scale=4) == 0.0
    assert length_reward("a" * 30, "", "", target=8, scale=4) == 0.0  # never below 0
    assert length_reward("abcdef", "", "", target=4) == 0.5  # default scale: the target
    assert length_reward(" \n", "", "", target=0) == 1.0 and length_reward("a", "", "", target=0) == 0.0


def test_the_builtin_rewards_and_their_config_entries_match() -> None:
    assert REWARDS.names() == sorted(BUILTIN_SPECS) == ["exact_answer", "format", "length", "reward_model"]
    for name, spec in BUILTIN_SPECS.items():
        assert spec.model_fields["name"].default == name
        assert all(field.description for field in spec.model_fields.values()), name
    assert all(field.description for field in GrpoParams.model_fields.values())


def test_a_score_is_the_weighted_sum_and_each_reward_is_reported_unweighted() -> None:
    params = grpo_config(
        rewards=[
            {"name": "exact_answer", "weight": 2.0},
            {"name": "format", "pattern": r"^\d+$", "weight": 0.5},
            {"name": "format", "pattern": "x"},
        ]
    ).method
    assert score_answer(params.rewards, "42", "42", "") == (2.5, [1.0, 1.0, 0.0])
    assert score_answer(params.rewards, "It is 42", "42", "") == (2.0, [1.0, 0.0, 0.0])
    assert reward_names(params.rewards) == ["reward_exact_answer", "reward_format", "reward_format_2"]


def test_reward_entries_are_checked_with_did_you_mean() -> None:
    assert [type(r).__name__ for r in GrpoParams().rewards] == ["ExactAnswerReward"]  # the default
    with pytest.raises(UserError, match=r"method\.rewards\.0.*unknown key 'patern' for reward 'format'.*'pattern'"):
        grpo_config(rewards=[{"name": "format", "patern": "x"}])
    with pytest.raises(UserError, match=r"method\.rewards\.0.*unknown reward 'lenght'\. Did you mean 'length'"):
        grpo_config(rewards=[{"name": "lenght", "target": 3}])
    with pytest.raises(UserError, match=r"method\.rewards\.0.*not a valid regular expression"):
        grpo_config(rewards=[{"name": "format", "pattern": "("}])
    with pytest.raises(UserError, match=r"method\.rewards\.0.*must look like 'module:callable'"):
        grpo_config(rewards=[{"function": "my_rewards"}])
    with pytest.raises(UserError, match=r"method\.rewards.*at least 1 item"):
        grpo_config(rewards=[])
    with pytest.raises(UserError, match=r"unknown key 'method\.num_generation' for method 'grpo'"):
        grpo_config(num_generation=8)
    with pytest.raises(UserError, match=r"method\.num_generations"):
        grpo_config(num_generations=1)


def test_the_config_round_trips_with_its_rewards(tmp_path: Path) -> None:
    config = grpo_config(
        rewards=[
            {"name": "length", "target": 3, "weight": 0.1},
            {"function": "tuneforge.methods.rewards:exact_answer"},
        ]
    )
    text = dump_config(config)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    from tuneforge.config.load import load_config

    reloaded = load_config(path)
    assert reloaded.method.model_dump() == config.method.model_dump()
    assert yaml.safe_load(dump_config(reloaded))["method"] == yaml.safe_load(text)["method"]
    assert yaml.safe_load(text)["method"]["rewards"] == [
        {"name": "length", "target": 3, "scale": None, "weight": 0.1},
        {"function": "tuneforge.methods.rewards:exact_answer", "weight": 1.0},
    ]


# ---------------------------------------------------------------------------------------------------- plugins

PLUGIN = """
def brevity(completion, reference, prompt):
    return 1.0 if len(completion.strip()) < 5 else 0.0

def needs_four(completion, reference, prompt, extra):
    return 0.0
"""


def test_a_plugin_reward_resolves_from_a_file(tmp_path: Path) -> None:
    plugin = tmp_path / "my_rewards.py"
    plugin.write_text(PLUGIN)
    for target in ("my_rewards:brevity", f"{plugin}:brevity"):  # by the file's stem or its path
        config = grpo_config(plugins=[str(plugin)], rewards=[{"function": target, "weight": 2.0}])
        GRPO.check_config(config)
        fn, keys = reward_function(config.method.rewards[0])
        assert fn("hi", "", "") == 1.0 and fn("a long answer", "", "") == 0.0 and keys == {}
        assert score_answer(config.method.rewards, "ok", "", "") == (2.0, [1.0])
        assert reward_names(config.method.rewards) == ["reward_brevity"]


def test_an_importable_module_can_be_a_plugin() -> None:
    config = grpo_config(
        plugins=["tuneforge.methods.rewards"], rewards=[{"function": "tuneforge.methods.rewards:exact_answer"}]
    )
    GRPO.check_config(config)
    assert reward_function(config.method.rewards[0])[0]("it is 4", "4", "") == 1.0


def test_missing_plugins_and_functions_are_errors_naming_the_key(tmp_path: Path) -> None:
    plugin = tmp_path / "my_rewards.py"
    plugin.write_text(PLUGIN)
    cases = [
        ([str(plugin)], "my_rewards:brevty", r"method\.rewards\[0\]\.function: .* no function 'brevty'.*'brevity'"),
        ([str(plugin)], "my_rewards:needs_four", r"method\.rewards\[0\]\.function: .* must accept"),
        (
            [],
            "my_rewards:brevity",
            r"method\.rewards\[0\]\.function: module 'my_rewards' is not listed in the top-level plugins",
        ),
        (
            [str(tmp_path / "gone.py")],
            "gone:brevity",
            r"method\.rewards\[0\]\.function: cannot import plugin .*gone\.py",
        ),
        (["no_such_module_xyz"], "no_such_module_xyz:f", r"method\.rewards\[0\]\.function: cannot import plugin"),
    ]
    for plugins, target, message in cases:
        config = grpo_config(plugins=plugins, rewards=[{"function": target}])
        with pytest.raises(UserError, match=message):
            GRPO.check_config(config)


def test_a_broken_plugin_is_an_error_naming_the_key(tmp_path: Path) -> None:
    plugin = tmp_path / "broken.py"
    plugin.write_text("raise RuntimeError('boom')\n")
    config = grpo_config(plugins=[str(plugin)], rewards=[{"function": "broken:f"}])
    with pytest.raises(UserError, match=r"method\.rewards\[0\]\.function: cannot import plugin .*RuntimeError: boom"):
        GRPO.check_config(config)


def test_check_refuses_train_on_prompt_and_early_stopping_and_needs_a_reference_only_without_a_disabled_adapter() -> (
    None
):
    config = config_from_dict({"method": {"name": "grpo"}, "data": {"train_on_prompt": True}})
    with pytest.raises(UserError, match="data.train_on_prompt"):
        GRPO.check_config(config)
    stopping = config_from_dict({"method": {"name": "grpo"}, "train": {"early_stopping_patience": 2}})
    with pytest.raises(UserError, match="train.early_stopping_patience"):
        GRPO.check_config(stopping)
    assert GRPO.needs(config_from_dict({"method": {"name": "grpo"}})) == {}
    assert ADAPTERS.get("full").can_disable is False
    full = config_from_dict({"method": {"name": "grpo"}, "adapter": {"name": "full"}})
    assert GRPO.needs(full) == {"reference": None}
    assert GRPO.needs(config_from_dict({"method": {"name": "grpo", "beta": 0}, "adapter": {"name": "full"}})) == {}


# ---------------------------------------------------------------------------------------------------- objective


def test_group_advantages_by_hand() -> None:
    # group 1: mean 0.25, sample std sqrt((0.75² + 3·0.25²) / 3) = 0.5; group 2: all equal, std 0, no signal
    advantages, stds = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0]), 4)
    expected = [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(advantages, torch.tensor(expected))
    torch.testing.assert_close(stds, torch.tensor([0.5, 0.0]))
    # G = 2: ±(r - mean) / (|r1 - r2| / √2 + 1e-4)
    advantages, _ = group_advantages(torch.tensor([3.0, 1.0]), 2)
    torch.testing.assert_close(advantages, torch.tensor([1.0, -1.0]) / (math.sqrt(2) + 1e-4))


def test_the_token_objective_and_kl_by_hand() -> None:
    # ratios 1.5, 1.5, 0.5 (logp - old_logp = ln ratio); advantages +1, -1, +1; ε = 0.2
    #   t0: -min(1.5·1, 1.2·1) = -1.2 (clipped)   t1: -min(-1.5, -1.2) = 1.5   t2: -min(0.5, 0.8) = -0.5
    # ref - logp = 0, ln 2, -ln 2 → k3 KL = e^d - d - 1 = 0, 1 - ln 2, ln 2 - 0.5
    logps = torch.tensor([math.log(1.5), math.log(1.5), math.log(0.5)], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(3, dtype=torch.float64)
    ref = logps.detach() + torch.tensor([0.0, math.log(2), -math.log(2)], dtype=torch.float64)
    advantages = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    losses, kl = token_objective(logps, old, ref, advantages, epsilon=0.2, beta=0.5)
    expected_kl = torch.tensor([0.0, 1 - math.log(2), math.log(2) - 0.5], dtype=torch.float64)
    torch.testing.assert_close(kl, expected_kl)
    torch.testing.assert_close(losses, torch.tensor([-1.2, 1.5, -0.5], dtype=torch.float64) + 0.5 * expected_kl)
    losses.sum().backward()
    # d/dlogp: the clipped t0 only keeps its KL term (1 - e^d = 0); t1: -A·ρ + β(1 - 2); t2: -A·ρ + β(1 - 0.5)
    torch.testing.assert_close(logps.grad, torch.tensor([0.0, 1.5 - 0.5, -0.5 + 0.25], dtype=torch.float64))
    without_reference = token_objective(logps, old, None, advantages, 0.2, 0.5)
    assert torch.equal(without_reference[1], torch.zeros(3, dtype=torch.float64))


def test_on_policy_the_loss_is_minus_the_advantage_and_its_gradient_the_policy_gradient() -> None:
    logps = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    advantages = torch.tensor([0.5, 0.5, -2.0])
    losses, kl = token_objective(logps, logps.detach(), logps.detach(), advantages, 0.2, 0.04)
    torch.testing.assert_close(losses, -advantages)
    assert torch.equal(kl, torch.zeros(3))
    losses.sum().backward()
    torch.testing.assert_close(logps.grad, -advantages)


def test_answer_means_average_each_answers_tokens() -> None:
    values = torch.tensor([1.0, 3.0, 5.0, 10.0, 7.0])
    sequences = torch.tensor([0, 0, 0, 1, 2])
    torch.testing.assert_close(answer_means(values, sequences, 4), torch.tensor([3.0, 10.0, 7.0, 0.0]))


def _trl_grpo_loss(logps: torch.Tensor, old: torch.Tensor, ref: torch.Tensor, inputs: dict, beta: float, eps: float):
    """TRL's `GRPOTrainer._compute_loss` (loss_type grpo) called unbound with a stub trainer and fixed log-probs."""
    trainer_cls = pytest.importorskip("trl.trainer.grpo_trainer").GRPOTrainer
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
        loss_type="grpo",
        epsilon_low=eps,
        epsilon_high=eps,
        use_vllm=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        accelerator=SimpleNamespace(gather=lambda x: x, reduce=lambda x, reduction: x),
        _metrics={"train": defaultdict(list)},
    )
    loss = types.MethodType(trainer_cls._compute_loss, stub)(
        None, {**inputs, "old_per_token_logps": old, "ref_per_token_logps": ref}
    )
    return loss, stub._metrics["train"]["kl"][0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_loss_matches_trl(seed: int) -> None:
    """Advantages, per-token objective, per-answer means and the mean over answers, against TRL's GRPO loss."""
    gen = torch.Generator().manual_seed(seed)
    prompts, group, width = 3, 4, 6
    answers = prompts * group
    lengths = torch.randint(1, width + 1, (answers,), generator=gen)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    logps = -torch.rand(answers, width, generator=gen, dtype=torch.float64) * 3
    old = logps + torch.randn(answers, width, generator=gen, dtype=torch.float64) * 0.3  # some ratios get clipped
    ref = logps + torch.randn(answers, width, generator=gen, dtype=torch.float64) * 0.5
    rewards = torch.randint(0, 3, (answers,), generator=gen).double()
    rewards[:group] = 1.0  # one group without signal
    advantages, _ = group_advantages(rewards, group)
    mean = rewards.view(-1, group).mean(1).repeat_interleave(group)
    std = rewards.view(-1, group).std(1).repeat_interleave(group)  # TRL's nanstd is the sample std as well
    torch.testing.assert_close(advantages, (rewards - mean) / (std + 1e-4))
    inputs = {
        "prompt_ids": torch.ones(answers, 2, dtype=torch.long),
        "prompt_mask": torch.ones(answers, 2, dtype=torch.long),
        "completion_ids": torch.ones(answers, width, dtype=torch.long),
        "completion_mask": mask,
        "advantages": advantages,
    }
    trl_loss, trl_kl = _trl_grpo_loss(logps, old, ref, inputs, beta=0.04, eps=0.2)

    keep = mask.bool()
    sequences = torch.arange(answers)[:, None].expand(answers, width)[keep]
    losses, kl = token_objective(logps[keep], old[keep], ref[keep], advantages[sequences], 0.2, 0.04)
    ours = answer_means(losses, sequences, answers).sum() / group / prompts  # LossSums.loss / count
    torch.testing.assert_close(ours, trl_loss)
    assert kl.sum().item() / keep.sum().item() == pytest.approx(trl_kl, rel=1e-6)


# ---------------------------------------------------------------------------------------------------- data


def test_the_final_answer_is_the_last_supervised_run() -> None:
    #            system user  |answer 1|  user  |answer 2 + end|
    ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    labels = [IGNORE_INDEX] * 4 + [5, 6] + [IGNORE_INDEX] * 2 + [9, 10, 11]
    assert split_final_answer(RenderedSample(ids, labels)) == ([1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11])
    with pytest.raises(ValueError, match="no prompt"):
        split_final_answer(RenderedSample([1, 2], [1, 2]))


def test_collate_left_pads_prompts_and_right_pads_answers() -> None:
    samples = [
        RenderedSample([1, 2, 3, 4], [IGNORE_INDEX] * 3 + [4]),
        RenderedSample([5, 6, 7, 8], [IGNORE_INDEX] + [6, 7, 8]),
    ]
    batch = GRPO.collate(samples, True, 0)
    assert batch["prompt_ids"].tolist() == [[1, 2, 3], [0, 0, 5]]
    assert batch["prompt_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["answer_ids"].tolist() == [[4, 0, 0], [6, 7, 8]]
    assert batch["answer_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert GRPO.count(batch) == 2 and GRPO.packing is False and GRPO.data_kinds == {"chat"}
    assert collate_prompts(samples, False, 0).keys() == batch.keys()


def test_answers_end_at_their_first_stop_token_which_stays_supervised() -> None:
    assert cut_at_stop([7, 8, 2, 9, 2], {2}) == [7, 8, 2]
    assert cut_at_stop([2, 0, 0], {2, 0}) == [2]  # an empty answer: its stop token is its one token
    assert cut_at_stop([7, 8, 9], {2}) == [7, 8, 9]  # cut at max_new_tokens
    batch = answer_batch([[5, 6, 7], [4]], [[2], [8, 9, 2], [3, 2], [2]], True, 0, torch.device("cpu"))
    supervised = batch["targets"] != IGNORE_INDEX
    assert batch["targets"][supervised].tolist() == [2, 8, 9, 2, 3, 2, 2]
    assert batch["sequence_ids"][supervised].tolist() == [0, 1, 1, 1, 2, 2, 3]


# ---------------------------------------------------------------------------------------------------- the loss


def chat_samples(tokenizer: Any, rows: list[tuple[str, str]]) -> list[RenderedSample]:
    from tuneforge.data.messages import Conversation, Message
    from tuneforge.data.render import render_conversation

    return [
        render_conversation(tokenizer, Conversation([Message("user", q), Message("assistant", a)]), 256)
        for q, a in rows
    ]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir: Path) -> tuple[Any, Any]:
    from peft import LoraConfig, get_peft_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")), tokenizer


def test_one_loss_on_a_tiny_model(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    samples = chat_samples(tokenizer, [("What is 2 + 3?", "5"), ("Say hi.", "hi")])
    batch = GRPO.collate(samples, False, tokenizer.pad_token_id)
    params = grpo_config(
        num_generations=3, max_new_tokens=5, rewards=[{"name": "length", "target": 0, "scale": 10}]
    ).method
    models = MethodModels(tokenizer=tokenizer)
    model.train()
    torch.manual_seed(0)
    sums = GRPO.loss(model, batch, params, models)
    assert model.training  # sampling ran in eval mode and put the mode back
    assert set(sums.metrics) == {"reward", "reward_std", "kl", "answer_tokens", "reward_length"}
    assert all(isinstance(v, tuple) for v in sums.metrics.values())
    assert sums.metrics["reward"][1] == 6 and sums.metrics["reward_std"][1] == 2
    assert 1 <= sums.metrics["answer_tokens"][0] / 6 <= 5
    # LoRA starts as the identity: the policy is the reference, so KL is 0 and each prompt's loss -mean(A) ≈ 0
    assert sums.metrics["kl"][0] == 0.0
    assert abs(float(sums.loss.detach())) < 1e-4
    sums.loss.backward()
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
    model.zero_grad()
    torch.manual_seed(0)
    again = GRPO.loss(model, batch, params, models)  # the same random state samples the same answers
    assert again.metrics == sums.metrics


def test_packed_and_padded_forwards_give_the_same_token_log_probs(tiny: tuple[Any, Any]) -> None:
    model, _ = tiny
    model.eval()
    prompts, answers = [[1, 5, 9, 11], [1, 7]], [[30, 31, 2], [40, 2], [2], [50, 51, 52]]
    cpu = torch.device("cpu")
    packed, sequences = token_log_probs(model, answer_batch(prompts, answers, True, 0, cpu))
    padded, rows = token_log_probs(model, answer_batch(prompts, answers, False, 0, cpu))
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    assert torch.equal(sequences, rows)
    scaled, _ = token_log_probs(model, answer_batch(prompts, answers, True, 0, cpu), temperature=2.0)
    assert not torch.allclose(scaled, packed)
    model.train()
