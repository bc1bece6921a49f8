"""Bad inputs to the console scripts: one line naming the value or file, a documented exit status.

Exit statuses (``transport.cli``): 2 for a bad argument or input, found before any round runs;
3 when a client gives up reaching the server; 4 when a client completed no round.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from federation_helpers import REPO, free_port

from transport.checkpoint import Checkpoint, save_checkpoint

HERE = Path(__file__).resolve().parent
APP = ["--app", "test_apps:app", "--app-dir", str(HERE)]  # numpy model, synthetic data, 21 parameters


BLOCK_TORCH = """
import sys

class NoTorch:  # as if torch were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTorch())
"""


def run(command: str, *args: str, timeout: float = 60, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``secagg-<command> args`` in a fresh interpreter (``prelude`` runs first)."""
    module, function = (
        ("transport.demo", "main") if command == "demo" else ("transport.cli", f"{command}_main")
    )
    code = f"{prelude}\nimport sys\nfrom {module} import {function}\nsys.exit({function}(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line(result: subprocess.CompletedProcess[str], status: int, *fragments: str) -> None:
    """Exit ``status``, no traceback, and one stderr line holding every fragment."""
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if all(f in line for f in fragments)]
    assert len(lines) == 1, result.stderr


def test_port_out_of_range() -> None:
    assert_one_line(run("server", "--port", "99999"), 2, "--port", "99999", "0..65535")


def test_demo_with_one_client() -> None:
    assert_one_line(run("demo", "--clients", "1"), 2, "--clients", "at least 2, got 1")


def test_demo_plot_in_a_missing_folder_is_refused_before_the_run() -> None:
    result = run("demo", "--plot", "/nonexistent/x.png", *APP, "--clients", "3", "--in-process")
    assert_one_line(result, 2, "--plot /nonexistent/x.png", "/nonexistent does not exist")
    assert "round" not in result.stdout


@pytest.mark.parametrize("command", ["server", "client", "demo"])
def test_base_install_without_torch(command: str) -> None:
    blocked = BLOCK_TORCH
    args = ["--id", "1"] if command == "client" else []
    result = run(command, *args, prelude=blocked)
    assert_one_line(result, 2, "torch is not installed: pip install 'secagg-fedavg[torch]'")


def test_checkpoint_in_a_missing_folder_is_refused_before_round_one() -> None:
    result = run("server", *APP, "--checkpoint", "/nonexistent/dir/x.ckpt")
    assert_one_line(result, 2, "--checkpoint /nonexistent/dir/x.ckpt", "/nonexistent/dir does not exist")


def test_missing_certfile() -> None:
    assert_one_line(
        run("server", *APP, "--certfile", "/nonexistent/cert.pem"),
        2,
        "--certfile /nonexistent/cert.pem: no such file",
    )


def test_certfile_that_is_not_a_certificate(tmp_path: Path) -> None:
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate\n")
    assert_one_line(
        run("server", *APP, "--certfile", str(bad)), 2, f"--certfile {bad}: not a PEM certificate"
    )


def test_cafile_that_is_not_a_certificate(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    result = run("client", *APP, "--id", "1", "--url", "wss://127.0.0.1:9", "--cafile", str(bad))
    assert_one_line(result, 2, f"--cafile {bad}: not a PEM certificate")


def test_roster_that_is_not_json(tmp_path: Path) -> None:
    bad = tmp_path / "roster.json"
    bad.write_text("{not json")
    result = run("server", *APP, "--mode", "active", "--roster", str(bad))
    assert_one_line(result, 2, f"--roster {bad}: not a JSON roster")


def test_unknown_log_level() -> None:
    assert_one_line(run("server", "--log-level", "foo"), 2, "--log-level", "'foo'", "DEBUG, INFO")


def test_http_url() -> None:
    result = run("client", *APP, "--id", "1", "--url", "http://127.0.0.1:8765")
    assert_one_line(result, 2, "--url http://127.0.0.1:8765", "must start with ws:// or wss://")


def test_bad_value_exits_2_not_1() -> None:
    result = run("server", *APP, "--clients", "4", "--threshold", "9")
    assert_one_line(result, 2, "threshold", "9")


def test_threat_model_fractions_outside_0_1_exit_2() -> None:
    assert_one_line(run("server", *APP, "--collusion-fraction", "1.5"), 2, "--collusion-fraction", "[0, 1)")
    assert_one_line(run("server", *APP, "--dropout-fraction", "-0.1"), 2, "--dropout-fraction", "[0, 1)")
    result = run("client", *APP, "--id", "1", "--min-collusion-fraction", "1")
    assert_one_line(result, 2, "--min-collusion-fraction", "[0, 1)")
    result = run("client", *APP, "--id", "1", "--min-dropout-fraction", "1")
    assert_one_line(result, 2, "--min-dropout-fraction", "[0, 1)")


def test_a_harary_degree_unsafe_for_the_threat_model_exits_2_naming_the_probability() -> None:
    result = run("server", *APP, "--clients", "40", "--graph", "harary", "--degree", "8", "--threshold", "6")
    assert_one_line(result, 2, "threshold t=6 with degree k=8 is unsafe", "corrupt neighbours")


def test_zero_rounds() -> None:
    assert_one_line(run("server", *APP, "--rounds", "0"), 2, "--rounds", "at least 1, got 0")


def test_finished_checkpoint_says_so_and_exports_on_request(tmp_path: Path) -> None:
    from test_apps import app

    vector = np.random.default_rng(0).normal(size=app.learner.spec.size)
    save_checkpoint(tmp_path / "fed.ckpt", Checkpoint(3, vector, []))
    args = [*APP, "--checkpoint", str(tmp_path / "fed.ckpt"), "--rounds", "2"]
    assert_one_line(run("server", *args), 2, "already holds 2 rounds (--rounds 2): nothing to run")
    exported = run("server", *args, "--export", str(tmp_path / "model.npz"))
    assert exported.returncode == 0, exported.stderr
    assert np.array_equal(app.load_vector(tmp_path / "model.npz"), vector)


def test_export_with_the_wrong_suffix() -> None:
    assert_one_line(
        run("server", *APP, "--export", "model.pt"), 2, "--export model.pt", "exports a .npz file"
    )


def _start_server(port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transport.cli",
            "server",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
            *args,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(processes: Sequence[subprocess.Popen[str]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_wss_client_to_a_ws_server_gives_a_reason() -> None:
    port = free_port()
    server = _start_server(port, *APP, "--clients", "3", "--wait-timeout", "60")
    try:
        result = run(
            "client",
            *APP,
            "--clients",
            "3",
            "--id",
            "1",
            "--url",
            f"wss://127.0.0.1:{port}",
            "--give-up-after",
            "2",
        )
    finally:
        _stop([server])
    assert_one_line(result, 3, f"no server at wss://127.0.0.1:{port}", "it serves ws://, not wss://")
    assert "cannot reach the server: )" not in result.stderr  # the reason is never empty


NO_TERMS = """
import transport.client as client

_init = client.FederationClient.__init__

def _init_without_terms(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.terms = client.Terms()  # declares nothing at registration

client.FederationClient.__init__ = _init_without_terms
"""


def test_client_that_refused_every_round_exits_4() -> None:
    port = free_port()
    server = _start_server(port, *APP, "--clients", "4", "--rounds", "1")
    url = f"ws://127.0.0.1:{port}"
    common = ["--url", url, "--clients", "4", "--log-level", "WARNING"]
    good = [
        subprocess.Popen(
            [sys.executable, "-m", "transport.cli", "client", *APP, *common, "--id", str(i)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2, 3)
    ]
    try:
        # Client 4 runs another model (650 parameters, not 21) and declares no terms at
        # registration (as a client built without them would), so it gets as far as the rounds
        # and refuses each of them. (Declaring them, it is refused at registration: exit 2,
        # tests/transport/test_registration.py.)
        result = run("client", "--task", "digits-logreg", *common, "--id", "4", timeout=120, prelude=NO_TERMS)
        server.wait(timeout=60)
    finally:
        _stop([server, *good])
    assert server.returncode == 0
    assert_one_line(result, 4, "completed no round", "refused round 1")


@pytest.mark.parametrize("command", ["server", "client", "demo"])
def test_version_is_the_package_version(command: str) -> None:
    import fedavg_core
    import secagg
    import transport

    found = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert found is not None
    version = found.group(1)
    assert secagg.__version__ == fedavg_core.__version__ == transport.__version__ == version
    result = run(command, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"secagg-{command} {version}"
