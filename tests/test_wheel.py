"""What a user who installs the wheel gets: built from this checkout, installed with its
dependencies in a fresh virtual environment outside it, run from a folder of its own on
the embedded defaults. The editable install the other tests use would hide a file left out
of the wheel (the email templates were, once)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
SOURCE_TEMPLATES = sorted(p.name.split(".")[0] for p in (ROOT / "templates").glob("*.subject.txt"))

NOT_SOURCE = (".git", ".venv", "build", "var", "*.egg-info", "__pycache__", "node_modules")


def _run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the wheel installed; its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    # Built from a copy: a build in place reuses whatever an earlier one left in build/.
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    dist = work / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, source, cwd=work)
    [wheel] = dist.glob("securesend-*.whl")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=work)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=work)
    return venv / "bin"


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment: nothing of this checkout on the path, state in VAR_DIR."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for name in ("DATABASE_URL", "REDIS_URL", "SMTP_URL", "TEMPLATES_DIR"):
        env.pop(name, None)
    env.update(VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
    return env


def test_the_installed_package_is_not_this_checkout(
    installed: Path, tmp_path: Path, user_env: dict[str, str]
) -> None:
    where = _run(
        installed / "python",
        "-c",
        "import worker, api_shim, securesend_templates as t; "
        "print(worker.__file__); print(api_shim.__file__); print(t.__file__)",
        cwd=tmp_path,
        env=user_env,
    )
    for line in where.split():
        assert Path(line).is_relative_to(installed.parent), line


def test_the_wheel_renders_every_template(
    installed: Path, tmp_path: Path, user_env: dict[str, str]
) -> None:
    out = tmp_path / "preview"
    _run(installed / "securesend", "preview", "--out", out, cwd=tmp_path, env=user_env)
    rendered = sorted({p.name.split(".")[0] for p in out.glob("*.subject.txt")})
    assert SOURCE_TEMPLATES and rendered == SOURCE_TEMPLATES
    for name in SOURCE_TEMPLATES:
        for suffix in ("subject.txt", "txt", "html"):
            assert (out / f"{name}.{suffix}").read_text(encoding="utf-8").strip(), name


@pytest.fixture
def service(installed: Path, tmp_path: Path, user_env: dict[str, str]) -> Iterator[str]:
    """`securesend up` from the wheel on the embedded defaults; its API's base URL."""
    port = free_port()
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed below
    up = subprocess.Popen(
        [installed / "securesend", "up", "--port", str(port), "--concurrency", "1"],
        cwd=tmp_path,
        env=user_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", up)
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        log.close()


def test_one_send_with_the_wheel(
    installed: Path, tmp_path: Path, user_env: dict[str, str], service: str
) -> None:
    _run(
        installed / "securesend",
        "load",
        ROOT / "docs" / "demo-fixtures.yaml",
        cwd=tmp_path,
        env=user_env,
    )
    with httpx.Client(base_url=service, timeout=30) as client:
        login = client.post(
            "/login",
            json={"username": "alice@example.com", "password": "correct horse", "cookieless": True},
        )
        assert login.status_code == 200, login.text
        headers = {"x-sm-session-token": login.json()["sessionToken"]}
        guid = client.post("/messages/", json={"actionCode": "New"}, headers=headers).json()[
            "messageGuid"
        ]
        saved = client.put(
            f"/messages/{guid}/save",
            json={"to": ["bob@example.com"], "subject": "From the wheel", "body": "b"},
            headers=headers,
        )
        assert saved.status_code == 200, saved.text
        sent = client.put(f"/messages/{guid}/send", json={}, headers=headers)
    assert sent.status_code == 200, sent.text
    assert sent.json()["notificationSent"] is True
    assert "Alice Example" in sent.json()["notificationBodyText"]
    assert "<html" in sent.json()["notificationBodyHtml"].lower()

    outbox = Path(user_env["VAR_DIR"]) / "outbox"
    deadline = time.monotonic() + 30
    while not list(outbox.glob("*.eml")) and time.monotonic() < deadline:
        time.sleep(0.2)
    [email] = list(outbox.glob("*.eml"))
    assert b"bob@example.com" in email.read_bytes()
    assert not (tmp_path / "control").exists()  # the embedded broker keeps to VAR_DIR
    assert (Path(user_env["VAR_DIR"]) / "broker" / "control").is_dir()
