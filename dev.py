#!/usr/bin/env python3
"""Set up a virtualenv and run the demo, the tests or the linters. Needs only python3.

    python3 dev.py demo [ARGS...]   # set up, then run the demo federation
    python3 dev.py test [ARGS...]   # set up, then run the whole test suite (pytest ARGS)
    python3 dev.py check            # set up, then ruff (lint, format), mypy, docs (mkdocs --strict)
    python3 dev.py bench [ARGS...]  # set up, then python -m benchmarks.round ARGS

The virtualenv lives in .venv (override with SECAGG_VENV). It is created once and reinstalled
only when pyproject.toml changes. torch is pinned to the CPU build 2.13.0, installed first so
that no CUDA packages are pulled in.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SECAGG_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
PYTHON_DIRS = ("secagg", "fedavg_core", "transport", "tests", "benchmarks", "examples", "dev.py")
TORCH = "torch==2.13.0"


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def setup() -> None:
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".secagg-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    pip = (PY, "-m", "pip", "install", "--disable-pip-version-check", "-q")
    run(*pip, TORCH)
    run(*pip, "-e", ".[torch,examples,test,dev,flower,ray,dp,docs]")
    stamp.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "check", "bench", "setup"}:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    setup()
    try:
        if command == "demo":
            demo = BIN / "secagg-demo"
            if demo.exists():
                run(demo, *rest)
            else:
                run(PY, "examples/round_demo.py", *rest)
        elif command == "test":
            run(PY, "-m", "pytest", *rest)
        elif command == "check":
            run(BIN / "ruff", "check", ".")
            run(BIN / "ruff", "format", "--check", *PYTHON_DIRS)
            run(BIN / "mypy")
            run(BIN / "mkdocs", "build", "--strict", "--site-dir", VENV / "site")  # the docs site
        elif command == "bench":
            run(PY, "-m", "benchmarks.round", *rest)
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    if shutil.which("python3") is None and sys.executable is None:  # pragma: no cover
        raise SystemExit("python3 is required")
    raise SystemExit(main(sys.argv[1:]))
