"""`tuneforge serve MODEL_OR_RUN_DIR [--adapter NAME=PATH ...]`: an OpenAI-compatible API.

Serves POST /v1/chat/completions and /v1/completions (streaming too), GET /v1/models, GET /generate?prompt=...
and GET /health. Several LoRA adapters share one base model; the request's `model` field picks one. Concurrent
requests are batched. A LoRA run directory serves its base model and its adapter (under the run's name).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from typing import Any

__all__ = ["HELP", "NAME", "add_parser", "is_loopback", "run"]

NAME = "serve"
HELP = "serve a model or run over an OpenAI-compatible API"


def add_parser(sub: Any) -> None:
    from tuneforge.serve.engines import ENGINES
    from tuneforge.serve.loading import DEFAULT_ENGINE, engine_choices

    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    parser.add_argument("model", help="run directory, zoo name, Hugging Face folder or .gguf file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TUNEFORGE_API_KEY"),
        help="require this bearer key on every route (env TUNEFORGE_API_KEY); "
        "mandatory when binding anything but loopback",
    )
    parser.add_argument(
        "--name", help="model id of MODEL_OR_RUN_DIR (default: its directory or model name; a LoRA run's adapter)"
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also serve a LoRA adapter as model NAME: a tuneforge run directory trained on the same base model, "
        "or a peft adapter folder (repeatable)",
    )
    parser.add_argument(
        "--engine",
        default=DEFAULT_ENGINE,
        choices=engine_choices(),
        help="; ".join(f"{name}: {ENGINES.get(name).help}" for name in ENGINES.names())
        + "; auto: an installed engine that prefers the model, else the default",
    )
    parser.add_argument("--max-tokens", type=int, default=256, help="default answer length limit")
    parser.add_argument("--max-batch-size", type=int, default=8, help="most answers generated together (default 8)")
    parser.add_argument(
        "--batch-wait-ms", type=float, default=10.0, help="how long to wait for more requests to batch (default 10)"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="most prompts waiting for generation; requests beyond it get HTTP 429 (default 64)",
    )
    parser.set_defaults(handler=run)


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 / ::1 addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_args(args: argparse.Namespace) -> None:
    from tuneforge.errors import UserError

    if not is_loopback(args.host) and not args.api_key:
        raise UserError(f"binding {args.host} exposes the model to the network: set --api-key (or TUNEFORGE_API_KEY)")
    for flag, value in (("--max-batch-size", args.max_batch_size), ("--max-queue", args.max_queue)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})")
    if args.batch_wait_ms < 0 or args.max_tokens < 1:
        raise UserError("--batch-wait-ms must be 0 or more and --max-tokens at least 1")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    import uvicorn

    from tuneforge.progress import console
    from tuneforge.serve.app import create_app
    from tuneforge.serve.loading import open_engine, pick_engine
    from tuneforge.serve.plan import plan_serving
    from tuneforge.serve.scheduler import Scheduler

    plan = plan_serving(args.model, args.name, args.adapter)
    engine = open_engine(pick_engine(args.engine, plan.base), plan)
    scheduler = Scheduler(engine, args.max_batch_size, args.batch_wait_ms / 1000, args.max_queue)
    catalog = plan.catalog()
    app = create_app(engine, catalog, scheduler, args.api_key, args.max_tokens)
    console.print(
        f"serving {', '.join(catalog.ids())} on http://{args.host}:{args.port}/v1 with {type(engine).__name__} "
        "(POST /v1/chat/completions, /v1/completions; GET /v1/models, /generate, /health)"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
