"""The checked-in known-answer files are exactly what tests/data/make_kat.py writes.

So the script is a faithful record of how every vector was made (no hand edits), and running it
after an unintended wire change would show up as a diff, not as silently rewritten files.
"""

from __future__ import annotations

import subprocess
import sys

from ._reference import DATA


def test_make_kat_check_reproduces_the_files() -> None:
    names = sorted(p.name for p in DATA.glob("*_kat.json"))
    assert names == ["kdf_kat.json", "prg_kat.json", "session_kat.json", "shamir_kat.json"]
    result = subprocess.run(
        [sys.executable, str(DATA / "make_kat.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
