"""Security basics: every server binds 127.0.0.1 by default; the image does not run as root. (Logs are
checked for PHI and credentials at the very end of the suite, in test_06, once every process has written its
last line.)"""

from __future__ import annotations

import re

import psutil

from container.settings import Settings
from devstack.ahi_local.cli import build_parser as ahi_local_parser
from devstack.sagemaker_local.cli import _parser as gateway_parser
from tests.container.conftest import ROOT
from tests.reliability.conftest import Stack

#: Java reports an IPv4 loopback bind as the IPv4-mapped IPv6 address.
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1")


def _listening(procs: list[psutil.Process]) -> list[tuple[str, int, str]]:
    out = []
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.append((conn.laddr.ip, conn.laddr.port, " ".join(proc.cmdline())[:80]))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_defaults_bind_loopback_only() -> None:
    assert Settings.from_env({}, detect_gpu=False).host == "127.0.0.1"
    gateway_args = ["serve", "--model-data-url", "x", "--endpoint-name", "e"]
    assert gateway_parser().parse_args(gateway_args).host == "127.0.0.1"
    assert ahi_local_parser().parse_args(["serve", "--data-dir", "x"]).host == "127.0.0.1"


def test_running_servers_listen_on_loopback_only(stack: Stack) -> None:
    """The suite starts serve, the gateway and ahi-local without a bind option: they use the default."""
    assert "SPLEEN_BIND_HOST" not in stack.env
    for name, procs, port in [
        ("container (MMS)", stack.container.tree(), int(stack.container.url.rsplit(":", 1)[1])),
        ("sagemaker-local", stack.gateway.tree(), stack.gateway.port),
        ("ahi-local", stack.ahi.tree(), stack.ahi.port),
    ]:
        sockets = _listening(procs)
        assert any(p == port for _, p, _ in sockets), (name, sockets)
        assert all(ip in LOOPBACK for ip, _, _ in sockets), (name, sockets)


def test_image_does_not_run_as_root() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    instructions = [
        line.split(None, 1) for line in lines if line.strip() and not line.lstrip().startswith("#")
    ]
    users = [(i, parts[1].strip()) for i, parts in enumerate(instructions) if parts[0].upper() == "USER"]
    assert users, "the Dockerfile never sets USER: the container runs as root"
    last_index, user = users[-1]
    assert re.split(r"[:\s]", user)[0] not in ("root", "0"), user
    later = [parts[0].upper() for parts in instructions[last_index + 1 :]]
    assert "USER" not in later and later.count("FROM") == 0, later  # no later stage switches back
