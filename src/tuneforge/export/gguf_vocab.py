"""The tokenizer part of a GGUF file: vocabulary, token types, merges, special ids, pre-tokenizer, chat template."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

__all__ = ["LLAMA3_SPLIT", "QWEN2_SPLIT", "Vocab", "add_tokenizer_metadata", "pre_tokenizer_name", "read_vocab"]

# Split regexes of the byte-level BPE tokenizers whose llama.cpp pre-tokenizer has a name.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_BY_SPLIT = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}


@dataclass
class Vocab:
    """The tokenizer as GGUF stores it."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int]
    add_bos: bool
    add_eos: bool
    chat_template: str | list[dict[str, str]] | None

    @property
    def n_vocab(self) -> int:
        """The number of tokens, which is the embedding row count."""
        return len(self.tokens)


def read_vocab(model_dir: Path, config: dict[str, Any], n_vocab: int) -> Vocab:
    """The tokenizer as transformers loads it from ``model_dir``; ``n_vocab`` is the embedding row count.

    Loading it (rather than reading tokenizer.json) picks up what transformers adds or replaces: the chat template
    from chat_template.jinja or tokenizer_config.json, and for some model types (Qwen2) its own pre-tokenizer.
    """
    tokenizer = _load_tokenizer(model_dir)
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    _check_byte_level_bpe(data, model_dir)
    tokens, types = _token_table(data, n_vocab)
    special_ids = _special_ids(tokenizer, config, n_vocab)
    probe = tokenizer("a")["input_ids"]
    return Vocab(
        tokens=tokens,
        token_types=types,
        merges=[m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])],
        pre=pre_tokenizer_name(data, _model_names(model_dir, config)),
        special_ids=special_ids,
        add_bos=bool(probe) and probe[0] == special_ids.get("bos"),
        add_eos=bool(probe) and probe[-1] == special_ids.get("eos"),
        chat_template=_chat_template(tokenizer),
    )


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError, TypeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"cannot load the tokenizer in {model_dir} ({reason}); save it into the folder with "
            "tokenizer.save_pretrained(folder)"
        ) from None


def _check_byte_level_bpe(data: dict[str, Any], model_dir: Path) -> None:
    model = data.get("model") or {}
    byte_level = any(step.get("type") == "ByteLevel" for step in _steps(data.get("pre_tokenizer")))
    if model.get("type") != "BPE" or not byte_level:
        kind = f"{model.get('type', 'unknown')} tokenizer" + ("" if byte_level else " without byte-level splitting")
        raise UserError(
            f"the tokenizer in {model_dir} is a {kind}; GGUF export supports byte-level BPE tokenizers only "
            "(GPT-2 style, as Llama 3, Qwen and SmolLM2 use)"
        )


def _steps(component: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A pre-tokenizer or post-processor as a flat list of its steps."""
    if not component:
        return []
    if component.get("type") == "Sequence":
        inner = component.get("pretokenizers") or component.get("processors") or []
        return [step for part in inner for step in _steps(part)]
    return [component]


def _token_table(data: dict[str, Any], n_vocab: int) -> tuple[list[str], list[int]]:
    """Tokens by id, padded to the embedding size, with llama.cpp token types."""
    from gguf import TokenType

    by_id = {i: t for t, i in data["model"]["vocab"].items()}
    types = dict.fromkeys(by_id, int(TokenType.NORMAL))
    for added in data.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        types[added["id"]] = int(TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED)
    if by_id and max(by_id) >= n_vocab:
        raise UserError(
            f"the tokenizer has token id {max(by_id)} but the embedding matrix only has {n_vocab} rows; "
            "resize the model's token embeddings to the tokenizer (model.resize_token_embeddings) and re-save"
        )
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(n_vocab)]
    return tokens, [types.get(i, int(TokenType.UNUSED)) for i in range(n_vocab)]


def _special_ids(tokenizer: Any, config: dict[str, Any], n_vocab: int) -> dict[str, int]:
    """Ids of the bos/eos/unk/pad tokens the tokenizer names, else those config.json gives."""
    ids = {}
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is None:
            token_id = config.get(f"{kind}_token_id")
            token_id = token_id[0] if isinstance(token_id, list) and token_id else token_id
        if isinstance(token_id, int) and 0 <= token_id < n_vocab:
            ids[kind] = token_id
    return ids


def _chat_template(tokenizer: Any) -> str | list[dict[str, str]] | None:
    """The chat template; several named ones become the list GGUF stores them as."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return [{"name": name, "template": text} for name, text in template.items()]
    return template


def _model_names(model_dir: Path, config: dict[str, Any]) -> str:
    names = [model_dir.resolve().name, config.get("_name_or_path"), config.get("_model_name_or_path")]
    return " ".join(str(n) for n in names if n).lower()


def pre_tokenizer_name(data: dict[str, Any], model_names: str) -> str:
    """llama.cpp's name for how text is split before BPE merges (``tokenizer.ggml.pre``).

    Args:
        data: The tokenizer as ``tokenizer.json`` stores it.
        model_names: Lower-case names the model goes by (folder, hub id), to recognise SmolLM2 when the
            tokenizer alone cannot tell it from GPT-2.
    """
    steps = _steps(data.get("pre_tokenizer"))
    kinds = [step.get("type") for step in steps]
    for step in steps:
        split = _PRE_BY_SPLIT.get((step.get("pattern") or {}).get("Regex"))
        if step.get("type") == "Split" and split:
            return split
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        # SmolLM2 was trained with digits split one by one; a folder re-saved from a GGUF file can lose that step.
        return "smollm" if "smollm" in model_names else "gpt-2"
    return "default"


# ---------------------------------------------------------------------------------------------- writing


def add_tokenizer_metadata(writer: Any, vocab: Vocab) -> None:
    """Add ``vocab`` to a ``gguf.GGUFWriter`` as the ``tokenizer.ggml.*`` and ``tokenizer.chat_template`` keys."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    adders = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "unk": writer.add_unk_token_id,
        "pad": writer.add_pad_token_id,
    }
    for kind, token_id in vocab.special_ids.items():
        adders[kind](token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
