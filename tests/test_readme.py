"""The README's code keeps working: every name it imports exists, and the protocol snippet runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_the_two_commands_first() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert first_block is not None
    lines = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert lines[:2] == ["python3 dev.py demo", "python3 dev.py test"]


def test_every_name_the_readme_imports_exists() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 4
    imports = 0
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                exec(compile(ast.Module(body=[node], type_ignores=[]), "README.md", "exec"), {})
                imports += 1
    assert imports >= 6  # numpy, torch, secagg, fedavg_core (several blocks)


def test_protocol_snippet_runs_and_gives_the_exact_sum() -> None:
    namespace: dict[str, object] = {}
    exec(python_blocks()[0], namespace)
    res, inputs, cfg = namespace["res"], namespace["inputs"], namespace["cfg"]
    import numpy as np

    expected = np.zeros(cfg.vector_length, dtype=np.uint64)  # type: ignore[attr-defined]
    for i in sorted(res.survivors):  # type: ignore[attr-defined]
        expected = (expected + inputs[i]) % np.uint64(cfg.modulus)  # type: ignore[index, attr-defined]
    assert len(res.survivors) == 97  # type: ignore[attr-defined]
    assert np.array_equal(res.total, expected)  # type: ignore[attr-defined]
