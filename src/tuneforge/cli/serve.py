"""`tuneforge serve MODEL_OR_RUN_DIR`: an OpenAI-compatible API (chat completions, streaming, models, health)."""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "is_loopback", "run"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("serve", help="serve a model or run over an OpenAI-compatible API", description=__doc__)
    parser.add_argument("model", help="run directory, zoo name, Hugging Face folder or .gguf file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TUNEFORGE_API_KEY"),
        help="require this bearer key on every route (env TUNEFORGE_API_KEY); "
        "mandatory when binding anything but loopback",
    )
    parser.add_argument("--name", help="model id clients send (default: the run directory's or model's name)")
    parser.add_argument("--max-tokens", type=int, default=256, help="default answer length limit")
    parser.set_defaults(handler=run)


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 / ::1 addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from tuneforge.errors import UserError

    if not is_loopback(args.host) and not args.api_key:
        raise UserError(f"binding {args.host} exposes the model to the network: set --api-key (or TUNEFORGE_API_KEY)")
    import uvicorn

    from tuneforge.models.load import load_model
    from tuneforge.serve.app import create_app
    from tuneforge.serve.engines import TransformersEngine
    from tuneforge.train.progress import console

    loaded = load_model(args.model)
    name = args.name or Path(args.model.rstrip("/")).name
    context = int(getattr(loaded.model.config, "max_position_embeddings", 2048) or 2048)
    app = create_app(TransformersEngine(loaded.model, loaded.tokenizer, context), name, args.api_key, args.max_tokens)
    console.print(
        f"serving {args.model} as model {name!r} on http://{args.host}:{args.port}/v1 "
        f"(POST /v1/chat/completions, GET /v1/models, GET /health)"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
