"""flwr is an optional extra: the transport package imports without it, the adapter says why not."""

from __future__ import annotations

import subprocess
import sys

BLOCK_FLWR = "import sys; sys.modules['flwr'] = None; sys.modules['ray'] = None; "


def test_transport_imports_without_flwr() -> None:
    code = BLOCK_FLWR + "import transport, transport.codec; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_flower_adapter_needs_flwr() -> None:
    code = BLOCK_FLWR + "import transport.flower"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "ModuleNotFoundError" in out.stderr or "ImportError" in out.stderr
    assert "flwr" in out.stderr
