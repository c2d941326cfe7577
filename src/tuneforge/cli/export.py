"""`tuneforge export RUN_DIR --to DIR [--format hf|gguf|ollama]`: take the tuned model anywhere.

hf:     merged, sharded safetensors with tokenizer, chat template, generation config and a model card
        carrying a reproducibility record;
gguf:   one .gguf file (f32, f16, bf16 or q8_0) with tokenizer and chat template embedded, for llama.cpp;
ollama: the GGUF file plus a Modelfile whose template reproduces the chat template (`ollama create NAME -f
        DIR/Modelfile`).
An existing DIR is replaced only with --force; everything is written to a temporary folder and renamed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "export", help="merge and export a run (hf, gguf, ollama)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("source", help="run directory (or any model tuneforge loads)")
    parser.add_argument("--to", required=True, help="output folder")
    parser.add_argument("--format", choices=("hf", "gguf", "ollama"), default="hf")
    parser.add_argument("--dtype", default="auto", help="hf weights dtype: auto, float32, bfloat16, float16")
    parser.add_argument("--shard-size", default="2GB", help="largest safetensors shard (hf), e.g. 500MB")
    parser.add_argument("--gguf-type", default="f16", choices=("f32", "f16", "bf16", "q8_0"))
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    parser.set_defaults(handler=run)


def _gguf_into(source: str, folder: Path, gguf_type: str) -> tuple[Path, Any]:
    from tuneforge.export.gguf import export_gguf
    from tuneforge.export.hf import merged_model, write_hf_folder

    model, tokenizer, _ = merged_model(source)
    with tempfile.TemporaryDirectory(dir=folder.parent) as merged:
        write_hf_folder(model, tokenizer, Path(merged), "float32", "5GB")
        return export_gguf(Path(merged), folder / f"model-{gguf_type}.gguf", gguf_type), tokenizer


def run(args: argparse.Namespace) -> int:
    from tuneforge.export.hf import check_target, export_hf, publish_folder
    from tuneforge.train.progress import console

    out = Path(args.to)
    if args.format == "hf":
        export_hf(args.source, out, args.dtype, args.shard_size, args.force)
        console.print(f"merged model: {out} (load it with transformers, or `tuneforge chat {out}`)")
        return 0
    tmp = check_target(out, args.force)
    tmp.mkdir(parents=True)
    try:
        gguf, tokenizer = _gguf_into(args.source, tmp, args.gguf_type)
        if args.format == "ollama":
            from tuneforge.export.ollama import modelfile

            (tmp / "Modelfile").write_text(modelfile(tokenizer, gguf.name), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_folder(tmp, out, args.force)
    console.print(f"GGUF file: {out / gguf.name}")
    if args.format == "ollama":
        console.print(f"Ollama: ollama create {out.name} -f {out / 'Modelfile'} && ollama run {out.name}")
    return 0
