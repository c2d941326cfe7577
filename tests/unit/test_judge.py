"""The judge: prompt, parsing, position-swap combination, and an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tuneforge.errors import UserError
from tuneforge.eval.compare import Question
from tuneforge.eval.judge import combine, judge_prompt, make_judge, parse_choice, verdicts


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


def test_verdicts_with_a_judge_that_knows_the_right_answer():
    def ask(prompts):
        return ["A" if "Answer A: Paris" in p else "B" if "Answer B: Paris" in p else "TIE" for p in prompts]

    questions = [Question("Capital of France?"), Question("Capital of Italy?")]
    assert verdicts(ask, questions, ["Lyon", "Rome"], ["Paris", "Milan"]) == ["win", "tie"]
    assert verdicts(ask, questions[:1], ["Paris"], ["Lyon"]) == ["loss"]


class _FakeOpenAI(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeOpenAI.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        prompt = body["messages"][0]["content"]
        reply = "A" if "Answer A: good" in prompt else "B"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # quiet
        pass


def test_endpoint_judge(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("JUDGE_KEY", "secret")
        ask = make_judge(f"http://127.0.0.1:{server.server_port}/v1", model="judge-1", api_key_env="JUDGE_KEY")
        assert verdicts(ask, [Question("Q")], ["bad"], ["good"]) == ["win"]
        assert _FakeOpenAI.seen[0]["path"] == "/v1/chat/completions"
        assert _FakeOpenAI.seen[0]["auth"] == "Bearer secret" and _FakeOpenAI.seen[0]["model"] == "judge-1"
        assert _FakeOpenAI.seen[0]["temperature"] == 0
    finally:
        server.shutdown()


def test_endpoint_judge_needs_a_model_id_and_a_live_server():
    with pytest.raises(UserError, match="eval.judge_model"):
        make_judge("http://127.0.0.1:9/v1")
    ask = make_judge("http://127.0.0.1:9/v1", model="m")
    with pytest.raises(UserError, match="judge endpoint"):
        ask(["x"])
