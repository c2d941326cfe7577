"""`tuneforge serve` options: where the API key comes from (never silently from a visible argument) and the limits."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from tuneforge.cli.main import build_parser
from tuneforge.cli.serve import KEY_ENV, resolve_api_key
from tuneforge.errors import UserError

VISIBLE = "visible to every user of this machine in the process list"


def _args(*argv: str) -> argparse.Namespace:
    return build_parser(["serve"]).parse_args(["serve", "some-model", *argv])


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def test_the_key_comes_from_the_environment_quietly(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    assert resolve_api_key(_args()) is None
    monkeypatch.setenv(KEY_ENV, " from-env \n")
    assert resolve_api_key(_args()) == "from-env"
    assert VISIBLE not in capsys.readouterr().err


def test_the_key_comes_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv(KEY_ENV, "from-env")
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert resolve_api_key(_args("--api-key-file", str(key_file))) == "from-file"
    assert VISIBLE not in capsys.readouterr().err
    with pytest.raises(UserError, match=f"--api-key-file {tmp_path / 'missing'}: cannot read"):
        resolve_api_key(_args("--api-key-file", str(tmp_path / "missing")))
    key_file.write_text("\n")
    with pytest.raises(UserError, match="non-empty line of printable ASCII"):
        resolve_api_key(_args("--api-key-file", str(key_file)))


def test_a_key_on_the_command_line_works_with_a_warning(capsys: Any) -> None:
    assert resolve_api_key(_args("--api-key", "on-the-line")) == "on-the-line"
    warning = " ".join(capsys.readouterr().err.split())
    assert VISIBLE in warning and KEY_ENV in warning and "--api-key-file" in warning


def test_conflicting_or_unusable_keys_are_user_errors(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("k")
    with pytest.raises(UserError, match="not both"):
        resolve_api_key(_args("--api-key", "k", "--api-key-file", str(key_file)))
    with pytest.raises(UserError, match="printable ASCII"):
        resolve_api_key(_args("--api-key", "clé"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--host", "0.0.0.0"], f"set {KEY_ENV} or give --api-key-file"),
        (["--max-body-bytes", "0"], "--max-body-bytes must be at least 1"),
        (["--max-queue", "0"], "--max-queue must be at least 1"),
        (["--drain-timeout", "-1"], "--drain-timeout must be 0 or more"),
    ],
)
def test_bad_options_fail_before_any_model_is_loaded(argv: list[str], message: str) -> None:
    args = _args(*argv)
    with pytest.raises(UserError, match=message):
        args.handler(args)
