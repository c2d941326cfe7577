"""Fetching models from the Hugging Face hub and ModelScope, against a fake of both on loopback (no network)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fixtures.fake_hub import COMMIT, FakeHub, read_folder, serve
from tuneforge import access
from tuneforge.cli.options import apply_config_access
from tuneforge.config.schema import ModelSection
from tuneforge.errors import UserError
from tuneforge.models.hub_api import HubClient, HubError, needed_files, weight_files
from tuneforge.models.hub_download import (
    MARKER,
    download_folder,
    download_model,
    downloaded_models,
    find_downloaded,
)
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.models.sources import load_pretrained

REPO = "tiny-org/tiny-llama"
# A repository holds more than loading needs: other formats, docs, pickled weights, a second copy of the weights.
EXTRAS = {
    "README.md": b"# tiny\n",
    "pytorch_model.bin": b"pickled weights",
    "flax_model.msgpack": b"flax weights",
    "onnx/model.onnx": b"onnx graph",
    "consolidated.safetensors": b"the same weights in another layout",
    "additional_chat_templates/tool_use.jinja": b"{{ messages }}",
}
NEEDED = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "model.safetensors",
    "additional_chat_templates/tool_use.jinja",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path / "home"


@pytest.fixture
def model_files(tiny_llama_dir: Path) -> dict[str, bytes]:
    files = read_folder(tiny_llama_dir)
    assert NEEDED - set(EXTRAS) <= set(files)  # the tiny model has what a real repository has
    return {**files, **EXTRAS}


@pytest.fixture
def hf(model_files: dict[str, bytes], home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serve(FakeHub(dict(model_files))) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def folder_files(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in read_folder(folder).items() if k != MARKER}


def test_huggingface_fetches_only_what_loading_needs(hf: FakeHub, home: Path) -> None:
    folder = download_model(REPO)
    assert folder == home / "cache" / "hub" / "huggingface" / "tiny-org--tiny-llama" / "main"
    assert folder_files(folder) == {name: hf.files[name] for name in NEEDED}
    asked = {r.path for r in hf.requests}
    assert f"/api/models/{REPO}/revision/main" in asked
    assert {p for p in asked if "/resolve/" in p} == {f"/{REPO}/resolve/{COMMIT}/{name}" for name in NEEDED}
    marker = json.loads((folder / MARKER).read_text())
    assert (marker["hub"], marker["repo_id"], marker["revision"], marker["commit"]) == (
        "huggingface",
        REPO,
        "main",
        COMMIT,
    )
    assert find_downloaded(REPO) == folder
    assert [(m.hub, m.repo_id, m.revision) for m in downloaded_models()] == [("huggingface", REPO, "main")]

    hf.requests.clear()
    assert download_model(REPO) == folder  # a second pull only lists: every file is still current
    assert [r.path for r in hf.requests] == [f"/api/models/{REPO}/revision/main"]


def test_modelscope_fetches_from_its_own_api(
    model_files: dict[str, bytes], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(FakeHub(dict(model_files))) as hub:
        monkeypatch.setenv("MODELSCOPE_DOMAIN", hub.url)
        folder = download_model(REPO, "modelscope")
    assert folder == home / "cache" / "hub" / "modelscope" / "tiny-org--tiny-llama" / "master"
    assert folder_files(folder) == {name: model_files[name] for name in NEEDED}
    listing = hub.requests[0]
    assert listing.path == f"/api/v1/models/{REPO}/repo/files"
    assert (listing.query["Revision"], listing.query["Recursive"]) == (["master"], ["True"])
    downloads = [r for r in hub.requests if r.path == f"/api/v1/models/{REPO}/repo"]
    assert sorted(r.query["FilePath"][0] for r in downloads) == sorted(NEEDED)
    assert all(r.query["Revision"] == ["master"] for r in downloads)
    assert find_downloaded(REPO) == folder  # offline, any hub's copy is found


def test_an_interrupted_download_resumes_from_its_part_file(hf: FakeHub) -> None:
    weights = hf.files["model.safetensors"]
    cut = len(weights) // 3
    hf.cut_after["model.safetensors"] = cut
    with pytest.raises(HubError, match=rf"model.safetensors: the download stopped after {cut} bytes .*resume"):
        download_model(REPO, attempts=1)
    assert find_downloaded(REPO) is None  # nothing loadable yet
    part = download_folder(REPO, "huggingface") / "model.safetensors.part"
    assert part.read_bytes() == weights[:cut]

    config_requests = len(hf.file_requests("config.json"))
    folder = download_model(REPO, attempts=1)
    resumed = hf.file_requests("model.safetensors")[-1]
    assert resumed.headers.get("Range") == f"bytes={cut}-"
    assert (folder / "model.safetensors").read_bytes() == weights
    assert not part.exists()
    assert len(hf.file_requests("config.json")) == config_requests  # finished files are not fetched again


def test_a_broken_connection_is_resumed_within_one_call(hf: FakeHub) -> None:
    weights = hf.files["model.safetensors"]
    hf.cut_after["model.safetensors"] = 1000
    folder = download_model(REPO)
    assert [r.headers.get("Range") for r in hf.file_requests("model.safetensors")] == [None, "bytes=1000-"]
    assert (folder / "model.safetensors").read_bytes() == weights


@pytest.mark.parametrize(("name", "hash_name"), [("model.safetensors", "sha256"), ("config.json", "git blob id")])
def test_a_file_that_does_not_match_its_hash_is_removed(hf: FakeHub, name: str, hash_name: str) -> None:
    hf.listed = dict(hf.files)
    good = hf.files[name]
    hf.files[name] = bytes([good[0] ^ 1]) + good[1:]  # same size, one bit off
    with pytest.raises(HubError, match=rf"'{REPO}'.*{name} is corrupt \({hash_name} [0-9a-f]+ where the hub lists"):
        download_model(REPO)
    folder = download_folder(REPO, "huggingface")
    assert not (folder / name).exists() and not (folder / f"{name}.part").exists()
    assert find_downloaded(REPO) is None

    hf.files[name] = good  # the hub serves the right bytes again: the next call completes
    assert (download_model(REPO) / name).read_bytes() == good


def test_an_unknown_id_is_an_error_naming_it(hf: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HubError) as raised:
        download_model("tiny-org/no-such-model")
    message = str(raised.value)
    assert message.startswith("cannot load 'tiny-org/no-such-model' from the Hugging Face hub: ")
    assert "answered 404 (not found): check the id and the revision" in message

    monkeypatch.setenv("MODELSCOPE_DOMAIN", hf.url)
    with pytest.raises(HubError, match="cannot load 'tiny-org/no-such-model' from the ModelScope hub: .* 404"):
        download_model("tiny-org/no-such-model", "modelscope")
    with pytest.raises(UserError, match="'../etc' is not a Hugging Face model id"):
        download_model("../etc")


def test_the_token_goes_only_to_the_endpoint(
    model_files: dict[str, bytes], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    with serve(FakeHub(dict(model_files))) as cdn, serve(FakeHub(dict(model_files))) as hub:
        hub.lfs_redirect = cdn.url  # same host, another port: followed, but it is not the endpoint
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        folder = download_model(REPO)
    assert (folder / "model.safetensors").read_bytes() == model_files["model.safetensors"]
    assert hub.requests and all(r.headers.get("Authorization") == "Bearer hf_secret" for r in hub.requests)
    assert [r.path for r in cdn.requests] == ["/cdn/model.safetensors"]
    assert "Authorization" not in cdn.requests[0].headers


def test_a_redirect_to_plain_http_elsewhere_is_refused(
    model_files: dict[str, bytes], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(FakeHub(dict(model_files))) as other, serve(FakeHub(dict(model_files))) as hub:
        hub.lfs_redirect = other.url.replace("127.0.0.1", "localhost")  # http, and not the endpoint's host
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(
            HubError, match=r"redirected to http://localhost:\d+/cdn/model.safetensors, which was refused"
        ):
            download_model(REPO)
    assert other.requests == []


def test_pickled_weights_alone_are_refused_before_any_download(hf: FakeHub) -> None:
    del hf.files["model.safetensors"], hf.files["consolidated.safetensors"]
    with pytest.raises(HubError, match=r"no .safetensors weights \(it has pytorch_model.bin: pickle files"):
        download_model(REPO)
    assert [r.path for r in hf.requests] == [f"/api/models/{REPO}/revision/main"]


def test_sharded_weights_follow_their_index(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # never asked: these functions only choose files
    client = HubClient("huggingface", REPO)
    paths = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
             "model-00002-of-00002.safetensors", "consolidated.safetensors", "pytorch_model.bin", "tokenizer.json",
             "original/params.json", "merges.txt", "vocab.json", "modeling_x.py"]  # fmt: skip
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    assert weight_files(client, paths, index) == [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert weight_files(client, [p for p in paths if "index" not in p and "-of-" not in p], None) == [
        "consolidated.safetensors"
    ]
    assert needed_files(client, paths) == ["config.json", "merges.txt", "tokenizer.json", "vocab.json"]
    assert "modeling_x.py" in needed_files(client, paths, include_code=True)
    with pytest.raises(HubError, match=r"names shards the repository does not have: \['model-9.safetensors'\]"):
        weight_files(client, paths, {"weight_map": {"a": "model-9.safetensors"}})


def test_a_pulled_model_loads_offline_by_its_id(hf: FakeHub, tiny_llama_dir: Path) -> None:
    access.enforce_offline()
    assert not access.hub_allowed()
    with pytest.raises(UserError, match=rf"run `tuneforge models pull {REPO}` \(or pass --online\)"):
        load_pretrained(REPO)
    assert hf.requests == []  # offline: the hub was never asked

    download_model(REPO)
    loaded = load_model(REPO)
    original = load_model(str(tiny_llama_dir))
    for (name, value), (_, expected) in zip(
        loaded.model.state_dict().items(), original.model.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name
    assert load_tokenizer(REPO)("hello world").input_ids == original.tokenizer("hello world").input_ids


def test_online_a_hub_id_is_fetched_then_loaded(hf: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    loaded = load_pretrained(REPO)
    assert loaded.source == REPO
    assert find_downloaded(REPO) is not None
    assert hf.file_requests("model.safetensors")


def test_model_hub_in_a_config_names_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ModelSection(hub=True).hub == "huggingface"  # `hub: true` keeps its meaning
    assert ModelSection(hub=False).hub is False
    with pytest.raises(ValueError, match="modelscope"):
        ModelSection(hub="modelscop")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")  # both are restored after the test
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        config = type("Config", (), {"model": ModelSection(hub="modelscope")})()
        apply_config_access(config, "cfg.yaml")
        assert access.chosen_hub() == "modelscope" and access.hub_allowed()
    finally:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        access.enforce_offline()
    assert access.chosen_hub() == "huggingface" and not access.hub_allowed()
