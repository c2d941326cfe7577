"""The judge: prompt, parsing, position-swap combination, and where an OpenAI-compatible endpoint's API key may go."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fixtures.judge_server import FakeJudge, answers_of, fake_judges, prefers
from tuneforge.config.load import config_from_dict
from tuneforge.config.schema import EvalSection
from tuneforge.errors import UserError
from tuneforge.eval.compare import Question
from tuneforge.eval.judge import (
    JudgeChoice,
    check_judge,
    choose_judge,
    combine,
    judge_prompt,
    make_judge,
    parse_choice,
    verdicts,
)
from tuneforge.eval.judge_endpoint import KEY_ENV, URL_ENV

KEY = "judge-secret-123"


@pytest.fixture(autouse=True)
def _no_judge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the judge variables it needs; none leak in from the environment running the tests."""
    for name in (KEY_ENV, URL_ENV):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    "reply,choice",
    [("A", "A"), ("b.", "B"), ("Tie", "TIE"), ("Answer B is better", "B"), ("", "TIE"), ("Both fine", "TIE")],
)
def test_parse_choice(reply, choice):
    assert parse_choice(reply) == choice


def test_combine_needs_both_orders_to_agree():
    assert combine("A", "B") == "win"  # tuned first chosen, then tuned second chosen
    assert combine("B", "A") == "loss"
    assert combine("A", "A") == "tie"  # always the first position: position bias, no verdict
    assert combine("TIE", "B") == "tie"


def test_prompt_carries_question_answers_and_reference():
    text = judge_prompt("Capital of France?", "Paris", "Lyon", reference="Paris")
    assert "Question: Capital of France?" in text and "Answer A: Paris" in text and "Answer B: Lyon" in text
    assert "Reference answer: Paris" in text and text.endswith("Reply with exactly A, B or TIE.")


# (base answer, tuned answer) → outcome for the tuned answer, with a judge preferring "Paris"
CASES = [
    ("Lyon", "Paris", "win"),
    ("Paris.", "Lyon.", "loss"),
    ("Paris", "It is Paris", "tie"),  # both have it
    ("Rome", "Milan", "tie"),  # neither
    ("No idea", "Paris, France", "win"),
]


def test_verdicts_of_a_judge_with_known_preferences_in_both_orders():
    seen: list[str] = []

    def ask(prompts: list[str]) -> list[str]:
        seen.extend(prompts)
        return [prefers("Paris")(p) for p in prompts]

    questions = [Question(f"Q{i}?") for i in range(len(CASES))]
    base, tuned = [c[0] for c in CASES], [c[1] for c in CASES]
    result = verdicts(ask, questions, base, tuned)
    assert result == [c[2] for c in CASES]
    assert Counter(result) == {"win": 2, "tie": 2, "loss": 1}
    # every question asked twice: tuned as A then base as A
    assert [answers_of(p) for p in seen[:2]] == [("Paris", "Lyon"), ("Lyon", "Paris")]
    assert len(seen) == 2 * len(CASES) and all(f"Question: Q{i // 2}?" in p for i, p in enumerate(seen))


@pytest.mark.parametrize("always", ["A", "B"])
def test_a_judge_that_only_looks_at_the_position_decides_nothing(always):
    questions = [Question(f"Q{i}?") for i in range(len(CASES))]
    result = verdicts(lambda prompts: [always] * len(prompts), questions, [c[0] for c in CASES], [c[1] for c in CASES])
    assert result == ["tie"] * len(CASES)


# ---------------------------------------------------------------------------------------------------- endpoints


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeJudge]]:
    with fake_judges() as start:
        yield start


QUESTIONS = [Question("Q1"), Question("Q2")]
BASE, TUNED = ["bad", "good"], ["good", "bad"]  # the fake judge prefers "good": a win, then a loss


@pytest.mark.scenario("judge_key")
def test_the_key_goes_to_an_endpoint_named_on_the_command_line(serve, monkeypatch):
    judge = serve()
    monkeypatch.setenv(KEY_ENV, KEY)
    ask = make_judge(choose_judge(judge.url, None), "judge-1")
    assert verdicts(ask, QUESTIONS, BASE, TUNED) == ["win", "loss"]
    assert judge.authorizations() == [f"Bearer {KEY}"] * 4
    assert {r["path"] for r in judge.seen} == {"/v1/chat/completions"}
    assert judge.seen[0]["body"]["model"] == "judge-1" and judge.seen[0]["body"]["temperature"] == 0


@pytest.mark.scenario("judge_key")
def test_the_key_goes_to_the_endpoint_named_in_its_variable(serve, monkeypatch):
    named, configured = serve(), serve()
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(URL_ENV, named.url)
    choice = choose_judge(None, configured.url)
    assert choice == JudgeChoice(named.url, URL_ENV)  # the variable wins over the config
    assert verdicts(make_judge(choice, "judge-1"), QUESTIONS, BASE, TUNED) == ["win", "loss"]
    assert named.authorizations() == [f"Bearer {KEY}"] * 4 and configured.seen == []


@pytest.mark.scenario("judge_key")
def test_an_endpoint_named_only_in_the_config_gets_no_key(serve, monkeypatch, capsys):
    judge = serve()
    monkeypatch.setenv(KEY_ENV, KEY)
    choice = choose_judge(None, judge.url)
    assert choice == JudgeChoice(judge.url, "eval.judge") and not choice.trusted
    assert verdicts(make_judge(choice, "judge-1"), QUESTIONS, BASE, TUNED) == ["win", "loss"]
    assert judge.authorizations() == [None] * 4
    assert not any(KEY in json.dumps(request) for request in judge.seen)
    err = capsys.readouterr().err
    assert err.count(f"{KEY_ENV} is set but not sent to {judge.url}") == 1, err
    assert "--judge" in err and URL_ENV in err


@pytest.mark.scenario("judge_key")
def test_no_other_variable_is_ever_sent(serve, monkeypatch):
    judge = serve()
    for name in ("HF_TOKEN", "OPENAI_API_KEY", "JUDGE_KEY"):
        monkeypatch.setenv(name, f"value-of-{name}")
    verdicts(make_judge(choose_judge(judge.url, None), "judge-1"), QUESTIONS, BASE, TUNED)
    assert judge.authorizations() == [None] * 4
    assert not any("value-of-" in json.dumps(request) for request in judge.seen)


@pytest.mark.scenario("judge_key")
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_and_the_key_does_not_follow_it(serve, monkeypatch, status):
    elsewhere = serve()
    judge = serve(redirect_to=elsewhere.url + "/chat/completions", redirect_status=status)
    monkeypatch.setenv(KEY_ENV, KEY)
    ask = make_judge(choose_judge(judge.url, None), "judge-1")
    pattern = rf"redirect \({status}\) to http://127\.0\.0\.1:\d+/v1/chat/completions"
    with pytest.raises(UserError, match=pattern) as info:
        ask(["Answer A: good\n\nAnswer B: bad\n\nWhich answer is better?"])
    assert "--judge" in str(info.value)
    assert judge.authorizations() == [f"Bearer {KEY}"]  # the named endpoint got it...
    assert elsewhere.seen == []  # ...and nothing reached the other server


@pytest.mark.scenario("judge_key")
@pytest.mark.parametrize(
    "url,host", [("http://judge.example.com/v1", "judge.example.com"), ("https://10.1.2.3:8000/v1", "10.1.2.3")]
)
def test_a_remote_endpoint_needs_an_explicit_opt_in(url, host, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    for origin in ("--judge", URL_ENV, "eval.judge"):
        with pytest.raises(UserError, match="eval.judge_remote: true") as info:
            make_judge(JudgeChoice(url, origin), "judge-1")
        assert repr(host) in str(info.value) and "--judge-remote" in str(info.value)
        assert str(info.value).startswith(f"{origin}:")
    assert callable(make_judge(JudgeChoice(url, "--judge"), "judge-1", allow_remote=True))  # no request made


@pytest.mark.parametrize("url", ["http://localhost:8000/v1", "http://[::1]:8000", "http://127.0.0.2/v1"])
def test_loopback_endpoints_need_no_opt_in(url):
    assert check_judge(JudgeChoice(url, "--judge"), "m", allow_remote=False) is True


@pytest.mark.parametrize(
    "url,match",
    [
        ("file:///etc/passwd", "must be an http:// or https:// URL"),
        ("ftp://127.0.0.1/v1", "must be an http:// or https:// URL"),
        ("http:///v1", "has no host"),
        ("http://127.0.0.1:port/v1", "not a valid URL"),
    ],
)
def test_only_http_urls_are_endpoints(url, match):
    with pytest.raises(UserError, match=match):
        check_judge(JudgeChoice(url, "--judge"), "m", allow_remote=True)


def test_a_model_name_or_path_is_a_local_judge_not_an_endpoint():
    assert not JudgeChoice("smollm2-135m-instruct", "--judge").is_endpoint
    assert not JudgeChoice("./models/judge", "eval.judge").is_endpoint
    assert JudgeChoice("HTTP://127.0.0.1:1/v1", "eval.judge").is_endpoint


def test_which_judge_is_in_force(monkeypatch):
    assert choose_judge(None, None) is None
    assert choose_judge(None, "cfg-judge") == JudgeChoice("cfg-judge", "eval.judge")
    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:9/v1")
    assert choose_judge(None, "cfg-judge") == JudgeChoice("http://127.0.0.1:9/v1", URL_ENV)
    assert choose_judge("cli-judge", "cfg-judge") == JudgeChoice("cli-judge", "--judge")


def test_endpoint_judge_needs_a_model_id_and_a_live_server():
    with pytest.raises(UserError, match="eval.judge_model"):
        make_judge(JudgeChoice("http://127.0.0.1:9/v1", "--judge"))
    ask = make_judge(JudgeChoice("http://127.0.0.1:9/v1", "--judge"), "m")
    with pytest.raises(UserError, match="judge endpoint http://127.0.0.1:9/v1/chat/completions failed"):
        ask(["x"])


def test_a_refused_key_says_which_variable_holds_it(serve, monkeypatch):
    judge = serve(status=401, reply=lambda prompt: "A")
    monkeypatch.setenv(KEY_ENV, "wrong")
    ask = make_judge(choose_judge(judge.url, None), "m")
    with pytest.raises(UserError, match=f"answered HTTP 401 .*check {KEY_ENV}"):
        ask(["x"])


def test_an_old_config_naming_a_key_variable_is_refused_with_what_replaced_it():
    import tuneforge.methods  # noqa: F401  (registers the adapters and methods a config names)

    with pytest.raises(UserError) as info:
        config_from_dict({"eval": {"judge": "http://127.0.0.1:8000/v1", "judge_api_key_env": "HF_TOKEN"}}, "old.yaml")
    message = str(info.value)
    assert message.startswith("old.yaml: 'eval.judge_api_key_env' was removed")
    assert KEY_ENV in message and "--judge" in message and URL_ENV in message and "Delete the line" in message


# ---------------------------------------------------------------------------------------------------- comparison


@pytest.mark.scenario("judge_key")
def test_a_training_run_comparison_sends_the_key_only_to_the_command_line_judge(
    serve, monkeypatch, tmp_path: Path, tiny_llama_dir: Path
):
    """The whole before/after path (ComparisonHook) with a config judge, then a command-line judge."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.eval.session import ComparisonHook
    from tuneforge.models.rundir import RunLayout

    questions = tmp_path / "q.json"
    questions.write_text(json.dumps(["Who are you?", "Name a colour."]), encoding="utf-8")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    monkeypatch.setenv(KEY_ENV, KEY)
    configured, named = serve(reply=lambda prompt: "A"), serve(reply=lambda prompt: "A")
    section = EvalSection(questions=str(questions), max_new_tokens=2, judge=configured.url, judge_model="j")

    for command_line, run in ((None, "config"), (named.url, "cli")):
        hook = ComparisonHook(section, {}, tmp_path, command_line)
        hook.before_training(model, tokenizer)
        record = hook.after_training(model, tokenizer, RunLayout(tmp_path / run))
        assert record["judge"] is True
        assert [q["outcome"] for q in record["questions"]] == ["tie", "tie"]  # always "A": position bias only
    assert configured.authorizations() == [None] * 4
    assert named.authorizations() == [f"Bearer {KEY}"] * 4


def test_a_comparison_refuses_a_remote_judge_before_any_model_loads(tmp_path: Path):
    from tuneforge.eval.session import ComparisonHook

    section = EvalSection(questions="demo_questions", judge="https://judge.example.com/v1", judge_model="j")
    with pytest.raises(UserError, match="'judge.example.com' is not on this machine"):
        ComparisonHook(section, {}, tmp_path)
    ComparisonHook(section.model_copy(update={"judge_remote": True}), {}, tmp_path)  # opted in: accepted


def test_a_local_model_judge_answers_with_the_model(tiny_llama_dir: Path, tmp_path: Path, monkeypatch, capsys):
    from fixtures.scripted_model import build_scripted_model

    monkeypatch.setenv(KEY_ENV, KEY)
    judge_dir = build_scripted_model(tiny_llama_dir, tmp_path / "judge", "B")  # replies "B" to any prompt
    ask = make_judge(choose_judge(None, str(judge_dir)))
    assert ask(["Answer A: x\n\nAnswer B: y", "anything"]) == ["B", "B"]
    assert verdicts(ask, QUESTIONS, BASE, TUNED) == ["tie", "tie"]  # "B" in both orders: position, not content
    assert KEY_ENV not in capsys.readouterr().err  # a model runs here: no key involved
