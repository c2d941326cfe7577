"""`tuneforge serve` prints its address only once the socket listens: a reader of the log may connect at once."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from tuneforge.cli.serve import announcing_server


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return False
    return True


def _config(port: int) -> uvicorn.Config:
    return uvicorn.Config(_app, host="127.0.0.1", port=port, log_level="critical", lifespan="off")


def test_the_address_is_announced_when_a_client_can_already_connect() -> None:
    port = _free_port()
    connected_when_announced: list[bool] = []
    server = announcing_server(_config(port), lambda: connected_when_announced.append(_connects(port)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not connected_when_announced and time.monotonic() < deadline:
        time.sleep(0.05)
    server.should_exit = True
    thread.join(30)
    assert connected_when_announced == [True]
    assert not thread.is_alive()


def test_a_port_already_taken_is_never_announced() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        announced: list[bool] = []
        server = announcing_server(_config(taken.getsockname()[1]), lambda: announced.append(True))
        outcome: list[BaseException] = []

        def _run() -> None:
            try:
                server.run()
            except SystemExit as exit_:
                outcome.append(exit_)

        thread = threading.Thread(target=_run, daemon=True)
        thread.start()
        thread.join(30)
    assert announced == []
    assert [exit_.code for exit_ in outcome] == [uvicorn.server.STARTUP_FAILURE]


def test_a_taken_port_is_refused_before_the_model_loads(capsys: Any) -> None:
    from tuneforge.cli.main import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "no-such-model-is-loaded", "--port", str(port)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot listen on 127.0.0.1:{port}: another server is using it: stop it or pick another --port" in err
    assert "no-such-model" not in err


def test_an_address_of_another_machine_is_refused(capsys: Any) -> None:
    from tuneforge.cli.main import main

    assert main(["serve", "no-such-model-is-loaded", "--host", "192.0.2.1", "--api-key", "k"]) == 2
    assert "cannot listen on 192.0.2.1:8000: Cannot assign requested address" in " ".join(
        capsys.readouterr().err.split()
    )


def test_a_host_name_that_does_not_resolve_is_refused(capsys: Any) -> None:
    from tuneforge.cli.main import main

    assert main(["serve", "no-such-model-is-loaded", "--host", "no-such-host.invalid", "--api-key", "k"]) == 2
    assert "--host no-such-host.invalid: cannot resolve this name" in " ".join(capsys.readouterr().err.split())
