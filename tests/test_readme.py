"""The README's code keeps working: every Python snippet runs verbatim, each in a fresh namespace.

A snippet that starts with ``# NAME.py`` is a file the README asks the reader to write: it is
written to a temporary folder (on ``sys.path``) and imported by the snippets after it. The only
names supplied from outside are the ones the README says come from the reader's own code.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def file_name(block: str) -> str | None:
    """``my_project.py`` for a block whose first line is ``# my_project.py``."""
    match = re.match(r"# (\w+\.py)\n", block)
    return match.group(1) if match else None


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
            if isinstance(node, ast.ImportFrom) and node.module and file_name_module(node.module, blocks):
                continue  # the reader's own file, written by the snippet test
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                exec(compile(ast.Module(body=[node], type_ignores=[]), "README.md", "exec"), {})
                imports += 1
    assert imports >= 6  # numpy, torch, secagg, fedavg_core (several blocks)


def file_name_module(module: str, blocks: list[str]) -> bool:
    return any(file_name(b) == f"{module}.py" for b in blocks)


def test_protocol_snippet_runs_and_gives_the_exact_sum() -> None:
    namespace: dict[str, object] = {}
    exec(python_blocks()[0], namespace)
    res, inputs, cfg = namespace["res"], namespace["inputs"], namespace["cfg"]

    expected = np.zeros(cfg.vector_length, dtype=np.uint64)  # type: ignore[attr-defined]
    for i in sorted(res.survivors):  # type: ignore[attr-defined]
        expected = (expected + inputs[i]) % np.uint64(cfg.modulus)  # type: ignore[index, attr-defined]
    assert len(res.survivors) == 97  # type: ignore[attr-defined]
    assert np.array_equal(res.total, expected)  # type: ignore[attr-defined]


@pytest.fixture
def reader_folder(tmp_path: Path) -> Iterator[Path]:
    """A working folder on ``sys.path`` (as the reader's project folder is), cleaned up after."""
    before = set(sys.modules)
    cwd = Path.cwd()
    sys.path.insert(0, str(tmp_path))
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)
        sys.path.remove(str(tmp_path))
        for name in set(sys.modules) - before:
            if getattr(sys.modules[name], "__file__", None) and str(tmp_path) in str(
                sys.modules[name].__file__
            ):
                del sys.modules[name]


def _reader_outputs(folder: Path) -> None:
    """What the README's commands leave behind (``--export model.pt``, ``--checkpoint fed.ckpt``)
    for the snippets that load them: the app's initial model, written by the same code paths."""
    import my_project  # type: ignore[import-not-found]

    from transport.checkpoint import Checkpoint, save_checkpoint

    app = my_project.app
    vector = app.learner.initial_vector()
    app.export(vector, folder / "model.pt")
    save_checkpoint(folder / "fed.ckpt", Checkpoint(6, vector, []))


def client_fn(context: object) -> object:  # the reader's own Flower client_fn ("keep your app")
    raise AssertionError("the snippet only builds the app")


def test_every_python_snippet_runs_verbatim(reader_folder: Path) -> None:
    blocks = python_blocks()
    ran = []
    for index, block in enumerate(blocks):
        name = file_name(block)
        if index == 0:  # run verbatim, and its sum checked, by the protocol snippet test
            ran.append(index)
            continue
        if name is not None:
            (reader_folder / name).write_text(block)
            ran.append(name)
            continue
        if "model.pt" in block:
            _reader_outputs(reader_folder)
        namespace: dict[str, object] = {"__name__": f"readme_snippet_{index}"}
        if "client_fn" in block and "def client_fn" not in block:
            namespace["client_fn"] = client_fn
        try:
            exec(compile(block, f"README.md snippet {index + 1}", "exec"), namespace)
        except ImportError as exc:
            if exc.name and exc.name.split(".")[0] in ("flwr", "dp_accounting"):
                pytest.skip(f"README snippet {index + 1} needs the optional {exc.name}")
            raise
        ran.append(index)
        if "model.pt" in block:
            import torch

            model = namespace["model"]
            assert isinstance(model, torch.nn.Module)
            assert sum(p.numel() for p in model.parameters()) == 20 * 32 + 32 + 32 * 2 + 2
    assert "my_project.py" in ran and len(ran) == len(blocks)


def test_the_readme_app_trains_a_client_and_evaluates_on_the_server(reader_folder: Path) -> None:
    block = next(b for b in python_blocks() if file_name(b) == "my_project.py")
    (reader_folder / "my_project.py").write_text(block)
    from transport.apps import AppContext, load_app
    from transport.tasks import TrainingSettings

    app = load_app("my_project:app", AppContext(3), reader_folder)
    server = app.server_model()
    trainer = app.client_trainer(2)
    update = trainer.train(server.initial_vector(), TrainingSettings(2, 16, 0.1), 1)
    assert update.num_examples == 200
    before = server.evaluate(server.initial_vector())
    after = server.evaluate(server.initial_vector() + update.update)
    assert before is not None and after is not None and after > before
