"""The `securesend` console script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import free_port, run_cli, wait_for_http


def test_help_lists_every_command() -> None:
    result = run_cli("--help", env=dict(os.environ))
    assert result.returncode == 0
    for command in ("up", "api", "worker", "migrate", "load"):
        assert command in result.stdout


def test_production_refuses_the_default_secret(tmp_path: Path) -> None:
    env = {**os.environ, "SECURESEND_ENV": "production", "VAR_DIR": str(tmp_path)}
    env.pop("SECRET_KEY", None)
    result = run_cli("migrate", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_up_serves_on_embedded_defaults_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "up", "--port", str(port)],
        cwd=tmp_path,  # the embedded defaults live under ./var/
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/v1/public/ping", process)
        assert (tmp_path / "var" / "securesend.sqlite3").exists()
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        output, _ = process.communicate(timeout=40)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = output.decode()
    assert process.returncode == 0, text
    assert f"http://127.0.0.1:{port}/api/v1" in text
    assert "stopping" in text
