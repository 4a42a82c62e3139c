"""authorized_keys parsing and the live-reloading trust store."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshsync.crypto.trust import PublicKey, TrustStore, parse_key_line


def line_of(
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    comment: str = "c",
) -> str:
    raw = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{raw} {comment}"


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return [
        line_of(ed25519.Ed25519PrivateKey.generate(), "alice@a"),
        line_of(ed25519.Ed25519PrivateKey.generate(), "bob@box"),
        line_of(ec.generate_private_key(ec.SECP384R1()), "carol"),
        line_of(rsa.generate_private_key(65537, 2048), "dave with spaces"),
    ]


def test_plain_and_option_prefixed_lines(lines: list[str]) -> None:
    for line in lines:
        key = parse_key_line(line)
        assert key is not None
        assert key.line == line
    alice = parse_key_line(lines[0])
    assert alice is not None
    assert alice == PublicKey(alice.blob, "alice@a")
    prefixes = [
        'command="echo hi",no-pty ',
        "no-pty ",
        'from="10.0.0.*",command="a \\"b c\\"" ',
        '\tenvironment="X=1 2"\t',
    ]
    for prefix in prefixes:
        key = parse_key_line(prefix + lines[2])
        assert key is not None, prefix
        assert key.comment == "carol"
    rsa_key = parse_key_line(lines[3])
    assert rsa_key is not None
    assert rsa_key.comment == "dave with spaces"


def test_non_key_lines(lines: list[str]) -> None:
    kind, b64, _ = lines[0].split(" ", 2)
    rsa_b64 = lines[3].split()[1]
    for junk in [
        "",
        "   ",
        "# ssh-ed25519 " + b64,
        "ssh-ed25519",
        f"ssh-ed25519 {b64}!!",
        f"ssh-ed25519 {b64[:-8]}",
        f"ssh-rsa {b64}",
        f"ssh-ed25519 {rsa_b64}",
        f"ssh-dss {b64}",
        f'command="unterminated {kind} {b64}',
        "hello world",
        "x" * 100_000,
        '"' * 50_000,
        f"ecdsa-sha2-nistp256 {lines[2].split()[1]}",
    ]:
        assert parse_key_line(junk) is None, junk[:80]


def test_store_follows_edits(tmp_path: Path, lines: list[str]) -> None:
    a, b, c = (parse_key_line(line) for line in lines[:3])
    assert a is not None
    assert b is not None
    assert c is not None
    user = tmp_path / "authorized_keys"
    store = TrustStore([user, tmp_path / "missing"], tmp_path / "state" / "trusted")
    assert store.keys() == set()
    user.write_text(f"# mine\n{lines[0]}\n")
    assert store.is_trusted(a.blob)
    assert not store.is_trusted(b.blob)
    user.write_text(f"# mine\n{lines[1]}\n")  # same size as before: the mtime must tell
    assert store.is_trusted(b.blob)
    assert not store.is_trusted(a.blob)
    user.write_text(f"{lines[1]}\nno-pty {lines[2]}\n")
    assert store.keys() == {b.blob, c.blob}


def test_unchanged_stamp_is_served_from_cache(tmp_path: Path, lines: list[str]) -> None:
    a, b = parse_key_line(lines[0]), parse_key_line(lines[1])
    assert a is not None
    assert b is not None
    user = tmp_path / "authorized_keys"
    old = time.time_ns() - 10**10  # well past the racy window
    user.write_text(lines[0] + "\n")
    os.utime(user, ns=(old, old))
    store = TrustStore([user], tmp_path / "trusted")
    assert store.keys() == {a.blob}
    user.write_text(lines[1] + "\n")  # same size and inode; put the old mtime back
    os.utime(user, ns=(old, old))
    assert store.keys() == {a.blob}  # proves the file was not re-read
    os.utime(user)
    assert store.keys() == {b.blob}


def test_add(tmp_path: Path, lines: list[str]) -> None:
    a, b, c = (parse_key_line(line) for line in lines[:3])
    assert a is not None
    assert b is not None
    assert c is not None
    user = tmp_path / "authorized_keys"
    user.write_text(lines[0])  # hand-edited, no final newline
    writable = tmp_path / "state" / "trusted_keys"
    store = TrustStore([user], writable)
    assert not store.add(a)
    assert not writable.exists()
    assert store.add(b)
    assert stat.S_IMODE(writable.stat().st_mode) == 0o600
    assert not store.add(b)
    assert store.add(c)
    assert writable.read_text() == f"{lines[1]}\n{lines[2]}\n"
    assert store.keys() == {a.blob, b.blob, c.blob}
    store2 = TrustStore([], user)
    assert store2.add(b)
    assert user.read_text() == f"{lines[0]}\n{lines[1]}\n"
