"""`tuneforge serve MODEL_OR_RUN_DIR [--adapter NAME=PATH ...]`: an OpenAI-compatible API.

Serves POST /v1/chat/completions and /v1/completions (streaming too), GET /v1/models, GET /generate?prompt=...
and GET /health. Several LoRA adapters share one base model; the request's `model` field picks one. Concurrent
requests are batched. A LoRA run directory serves its base model and its adapter (under the run's name).

API key: set TUNEFORGE_API_KEY or give --api-key-file; every route then needs `Authorization: Bearer <key>`.
Binding anything but loopback requires one. Without a key, only requests addressed to this machine (Host header)
and not sent by web pages of other origins are served. SIGTERM stops taking connections, lets the requests in
flight finish (up to --drain-timeout seconds) and exits with status 0; a first Ctrl-C drains the same way.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import signal
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "HELP",
    "KEY_ENV",
    "NAME",
    "add_parser",
    "announcing_server",
    "check_port_free",
    "is_loopback",
    "resolve_api_key",
    "run",
]

KEY_ENV = "TUNEFORGE_API_KEY"

NAME = "serve"
HELP = "serve a model or run over an OpenAI-compatible API"


def add_parser(sub: Any) -> None:
    from tuneforge.serve.engines import ENGINES
    from tuneforge.serve.guards import DEFAULT_MAX_BODY_BYTES
    from tuneforge.serve.loading import DEFAULT_ENGINE, engine_choices

    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    parser.add_argument("model", help="run directory, zoo name, Hugging Face folder or .gguf file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key-file",
        metavar="PATH",
        help=f"require the bearer key stored in this file on every route (or set {KEY_ENV}); "
        "mandatory when binding anything but loopback",
    )
    parser.add_argument(
        "--api-key",
        help=f"the key itself: visible to every user of this machine in the process list, prefer {KEY_ENV} "
        "or --api-key-file",
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
        help="most answers (prompts x n) waiting for generation; requests beyond it get HTTP 429, a request that "
        "asks for more on its own gets HTTP 400 (default 64)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body accepted; larger ones get HTTP 413 (default {DEFAULT_MAX_BODY_BYTES}: 1 MiB)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="on SIGTERM, seconds to let requests in flight finish before cancelling them (default 60)",
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


def resolve_api_key(args: argparse.Namespace) -> str | None:
    """The API key from --api-key-file, --api-key (with a warning: others can read it) or $TUNEFORGE_API_KEY."""
    from tuneforge.errors import UserError
    from tuneforge.progress import console

    if args.api_key_file and args.api_key:
        raise UserError("give the API key once: --api-key-file or --api-key, not both")
    if args.api_key_file:
        path = Path(args.api_key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"--api-key-file {path}: cannot read the key: {err}") from None
        source = f"--api-key-file {path}"
    elif args.api_key is not None:
        console.print(
            f"[yellow]warning:[/] --api-key is visible to every user of this machine in the process list; "
            f"set {KEY_ENV} or use --api-key-file instead"
        )
        key, source = args.api_key.strip(), "--api-key"
    else:
        key, source = os.environ.get(KEY_ENV, "").strip(), KEY_ENV
        if not key:
            return None
    if not key or not (key.isascii() and key.isprintable()):
        raise UserError(f"{source}: the API key must be a non-empty line of printable ASCII characters")
    return key


def check_port_free(host: str, port: int) -> None:
    """Refuse, before the model loads, an address this process cannot bind (taken, not this machine's, privileged)."""
    import socket

    from tuneforge.errors import UserError

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as err:
        raise UserError(f"--host {host}: cannot resolve this name ({err})") from None
    for family, kind, proto, _, address in addresses:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # a family this system lacks: the server skips it too
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server binds
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as err:
                taken = err.errno == errno.EADDRINUSE
                advice = "another server is using it: stop it or pick another --port" if taken else err.strerror
                raise UserError(f"cannot listen on {host}:{port}: {advice}") from None


def _check_args(args: argparse.Namespace, api_key: str | None) -> None:
    from tuneforge.errors import UserError

    if not is_loopback(args.host) and not api_key:
        raise UserError(f"binding {args.host} exposes the model to the network: set {KEY_ENV} or give --api-key-file")
    for flag, value in (
        ("--max-batch-size", args.max_batch_size),
        ("--max-queue", args.max_queue),
        ("--max-body-bytes", args.max_body_bytes),
    ):
        if value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})")
    if args.batch_wait_ms < 0 or args.max_tokens < 1 or args.drain_timeout < 0:
        raise UserError("--batch-wait-ms and --drain-timeout must be 0 or more, --max-tokens at least 1")


def run(args: argparse.Namespace) -> int:
    api_key = resolve_api_key(args)
    _check_args(args, api_key)
    check_port_free(args.host, args.port)
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
    app = create_app(engine, catalog, scheduler, api_key, args.max_tokens, args.max_body_bytes, args.host)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=args.drain_timeout
    )
    announcement = (
        f"serving {', '.join(catalog.ids())} on http://{args.host}:{args.port}/v1 with {type(engine).__name__} "
        "(POST /v1/chat/completions, /v1/completions; GET /v1/models, /generate, /health)"
        + ("" if api_key else "; no API key: this machine only")
    )
    server = announcing_server(config, lambda: console.print(announcement))
    _serve_until_signalled(server)
    return 0


def announcing_server(config: Any, announce: Any) -> Any:
    """A uvicorn server that calls `announce()` once its socket listens, not before.

    Whoever reads the address from the log (the web UI, a script) may connect at once; a port already taken
    fails uvicorn's start-up and nothing is announced.
    """
    import uvicorn

    class _AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                announce()

    return _AnnouncingServer(config)


def _serve_until_signalled(server: Any) -> None:
    """Run `server`; SIGTERM drains it (uvicorn's own handling) and ends in a normal exit.

    uvicorn handles SIGTERM while it serves, then raises the signal again for the handler that was there before:
    ours only asks the server to stop, so a drained server returns here instead of the process dying of the signal.
    """
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        server.run()
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: setattr(server, "should_exit", True))
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
