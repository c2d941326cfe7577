"""`tuneforge chat MODEL_OR_RUN_DIR`: streaming terminal chat, or one answer with --prompt."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

__all__ = ["HELP", "NAME", "add_parser", "run", "stream_reply"]

NAME = "chat"
HELP = "chat with a model or a finished run"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    parser.add_argument("model", help="run directory, zoo name, Hugging Face folder or .gguf file")
    parser.add_argument("--prompt", help="answer this one prompt and exit")
    parser.add_argument("--system", help="system prompt (default: the chat template's own)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.set_defaults(handler=run)


def stream_reply(
    model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int, temperature: float, out: Any
) -> str:
    """Generate an answer to `messages`, writing text to `out` as it is produced; returns the full answer."""
    import torch
    from transformers import TextIteratorStreamer

    from tuneforge.data.render import render_text
    from tuneforge.models.generate import generate_new_tokens, stop_token_ids

    text = render_text(tokenizer, messages, generation=True)
    inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    kwargs = dict(
        max_new_tokens=max_new_tokens,
        streamer=streamer,
        eos_token_id=stop_token_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )

    def generate() -> None:
        with torch.inference_mode():
            generate_new_tokens(model, inputs["input_ids"], inputs["attention_mask"], **kwargs)

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        out.write(piece)
        out.flush()
    worker.join()
    out.write("\n")
    return "".join(pieces).strip()


def run(args: argparse.Namespace) -> int:
    from tuneforge.models.load import load_model
    from tuneforge.progress import console

    loaded = load_model(args.model)
    base = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        stream_reply(
            loaded.model,
            loaded.tokenizer,
            [*base, {"role": "user", "content": args.prompt}],
            args.max_new_tokens,
            args.temperature,
            sys.stdout,
        )
        return 0
    console.print(f"chatting with {args.model} — empty line or Ctrl-D to quit, /reset to start over")
    history = list(base)
    while True:
        try:
            prompt = input("you> ").strip()
        except EOFError:
            break
        if not prompt:
            break
        if prompt == "/reset":
            history = list(base)
            continue
        history.append({"role": "user", "content": prompt})
        sys.stdout.write("bot> ")
        answer = stream_reply(
            loaded.model, loaded.tokenizer, history, args.max_new_tokens, args.temperature, sys.stdout
        )
        history.append({"role": "assistant", "content": answer})
    return 0
