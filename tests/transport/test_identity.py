"""Client-made identity keys, enrolment of public keys, and a roster file that grows while in use.

``secagg-client --init-identity PATH`` makes the key on the client (owner-only, never
overwritten); ``secagg-server --enrol ID=KEY`` puts only the public key in the roster; a
``RosterFile`` picks up entries added while it is in use and never lets an enrolled key change.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from secagg.primitives import signatures
from transport.cli import client_main, server_main
from transport.identity import (
    RosterFile,
    enrol,
    init_identity,
    load_identity_key,
    load_roster,
    parse_public_key,
    save_roster,
)
from transport.secret_files import create_secret_file


def test_init_identity_writes_an_owner_only_key_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "me.pem"
    assert client_main(["--id", "7", "--init-identity", str(path)]) == 0
    out = capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_identity_key(path)
    public = signatures.identity_public_bytes(key)
    assert (tmp_path / "me.pem.pub").read_text().strip() == public.hex()
    assert public.hex() in out and f"--enrol 7={public.hex()}" in out
    before = path.read_bytes()

    assert client_main(["--id", "7", "--init-identity", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path} exists; not overwritten" in err
    assert path.read_bytes() == before  # the first key is intact


def test_init_identity_refuses_a_symlink_and_a_stale_public_key_file(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "link.pem").symlink_to(target)  # dangling: exists() is False, the link is there
    with pytest.raises(FileExistsError):
        init_identity(tmp_path / "link.pem")
    assert not target.exists()
    (tmp_path / "b.pem.pub").write_text("00" * 32 + "\n")
    with pytest.raises(FileExistsError):
        init_identity(tmp_path / "b.pem")
    assert not (tmp_path / "b.pem").exists()  # no key without its public half
    with pytest.raises(FileExistsError):
        create_secret_file(tmp_path / "b.pem.pub", b"x")


def test_enrol_adds_public_keys_only_and_refuses_to_change_or_reuse_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roster = tmp_path / "roster.json"
    first, second = init_identity(tmp_path / "a.pem"), init_identity(tmp_path / "b.pem")
    assert server_main(["--roster", str(roster), "--enrol", f"3={first.hex()}"]) == 0
    assert server_main(["--roster", str(roster), "--enrol", f"4={tmp_path / 'b.pem.pub'}"]) == 0
    assert load_roster(roster) == {3: first, 4: second}
    text = roster.read_text()
    assert "PRIVATE" not in text and set(json.loads(text)) == {"3", "4"}
    capsys.readouterr()

    assert server_main(["--roster", str(roster), "--enrol", f"3={second.hex()}"]) == 2
    assert "client 3 is already enrolled with another key" in capsys.readouterr().err
    assert server_main(["--roster", str(roster), "--enrol", f"5={first.hex()}"]) == 2
    assert "already enrolled as client 3" in capsys.readouterr().err
    assert server_main(["--roster", str(roster), "--enrol", "6=abcd"]) == 2
    assert "64 hex digits" in capsys.readouterr().err
    assert server_main(["--enrol", f"6={first.hex()}"]) == 2
    assert "--enrol needs --roster" in capsys.readouterr().err
    assert load_roster(roster) == {3: first, 4: second}
    assert enrol(roster, 3, first) is False  # the same key again: nothing to do
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_parse_public_key_takes_hex_or_a_pub_file(tmp_path: Path) -> None:
    public = init_identity(tmp_path / "k.pem")
    assert parse_public_key(public.hex()) == public
    assert parse_public_key(str(tmp_path / "k.pem.pub")) == public
    with pytest.raises(ValueError, match="neither 64 hex digits nor a file"):
        parse_public_key(str(tmp_path / "missing.pub"))


def test_roster_file_picks_up_additions_and_never_changes_or_drops_a_key(tmp_path: Path) -> None:
    path = tmp_path / "roster.json"
    a, b, c = (os.urandom(32) for _ in range(3))
    save_roster(path, {1: a})
    roster = RosterFile(path)
    assert roster.current() == {1: a}
    enrol(path, 2, b)
    assert roster.current() == {1: a, 2: b}
    save_roster(path, {1: c, 3: c})  # key 1 swapped, 2 removed, 3 added
    assert roster.current() == {1: a, 2: b, 3: c}
    path.write_text("{ half written")
    assert roster.current() == {1: a, 2: b, 3: c}  # the last good roster
    with pytest.raises(ValueError):
        RosterFile(path)  # but a roster that never read is an error
