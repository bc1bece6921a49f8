"""The protocol core stays sans-I/O: no networking, no event loop, no clock, no global RNG."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import secagg

FORBIDDEN = {"asyncio", "websockets", "msgpack", "time", "datetime", "random", "socket", "threading"}
CORE = Path(secagg.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_secagg_sources_import_no_io_clock_or_global_rng() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 10
    offenders = {str(f.relative_to(CORE)): _imports(f) & FORBIDDEN for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_secagg_loads_no_network_or_event_loop_modules() -> None:
    code = (
        "import sys, secagg, secagg.primitives;"
        "print(','.join(sorted(m for m in ('asyncio','websockets','msgpack') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_secagg_does_not_import_the_other_packages() -> None:
    for f in CORE.rglob("*.py"):
        assert not _imports(f) & {"fedavg_core", "transport", "examples", "benchmarks"}, f
