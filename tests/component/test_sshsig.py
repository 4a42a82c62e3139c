"""SSHSIG interop with stock ssh-keygen, and rejection of anything malformed."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from meshsync.crypto import sshsig
from meshsync.crypto.keys import load_public_blob, load_signer
from meshsync.crypto.sshsig import BadSignature
from meshsync.crypto.sshwire import put_string, put_u32
from tests.component.openssh import ssh_keygen_verify

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen missing")

KEY_ARGS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa521": ["-t", "ecdsa", "-b", "521"],
    "rsa3072": ["-t", "rsa", "-b", "3072"],
}


@pytest.fixture(scope="module", params=list(KEY_ARGS))
def key(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp(request.param) / "id"
    cmd = ["ssh-keygen", "-q", *KEY_ARGS[request.param], "-N", "", "-C", "k", "-f", str(path)]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="module")
def good(key: Path) -> bytes:
    return sshsig.sign(load_signer(key, None), b"the message")


def test_our_signature_verifies_with_ssh_keygen(key: Path, tmp_path: Path) -> None:
    message = b"hello\x00world\n" * 1000
    armored = sshsig.armor(sshsig.sign(load_signer(key, None), message))
    assert ssh_keygen_verify(tmp_path, key, armored, message)
    assert not ssh_keygen_verify(tmp_path, key, armored, message + b"!")


@pytest.mark.parametrize("hashalg", ["sha512", "sha256"])
def test_ssh_keygen_signature_verifies_with_ours(key: Path, tmp_path: Path, hashalg: str) -> None:
    msg = tmp_path / "msg"
    msg.write_bytes(b"payload")
    cmd = [
        "ssh-keygen",
        "-Y",
        "sign",
        "-n",
        "meshsync",
        "-O",
        f"hashalg={hashalg}",
        "-f",
        str(key),
        str(msg),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    armored = (tmp_path / "msg.sig").read_text()
    blob = sshsig.dearmor(armored)
    assert sshsig.verify(blob, b"payload") == load_public_blob(Path(f"{key}.pub").read_text())
    assert sshsig.armor(blob) == armored  # same wrapping as ssh-keygen
    with pytest.raises(BadSignature):
        sshsig.verify(blob, b"payload", namespace="file")


def test_wrong_namespace_and_altered_message(good: bytes) -> None:
    with pytest.raises(BadSignature, match="namespace"):
        sshsig.verify(good, b"the message", namespace="other")
    with pytest.raises(BadSignature, match="does not verify"):
        sshsig.verify(good, b"the messagE")


def envelope(
    *,
    version: int = 1,
    key: bytes = b"",
    ns: bytes = b"meshsync",
    hashalg: bytes = b"sha512",
    sig: bytes = b"",
) -> bytes:
    return (
        b"SSHSIG"
        + put_u32(version)
        + put_string(key)
        + put_string(ns)
        + put_string(b"")
        + put_string(hashalg)
        + put_string(sig)
    )


def test_malformed_blobs_raise_bad_signature(good: bytes) -> None:
    rng = random.Random(1)
    blobs = [
        b"",
        b"SSHSIG",
        b"SSHSIG\x00\x00\x00\x01",
        good + b"\x00",
        b"x" + good[1:],
        b"SSHSIG" + put_u32(1) + put_u32(0xFFFFFFFF) + b"abc",  # length past the end
        b"SSHSIG" + b"\x00" * 20000,  # oversized
        envelope(version=2),
        envelope(hashalg=b"md5"),
        envelope(),
        envelope(key=good[10:60], sig=good[-80:]),
        *(good[:n] for n in range(len(good))),
        *(rng.randbytes(rng.randrange(1, 600)) for _ in range(200)),
        *(b"SSHSIG" + rng.randbytes(rng.randrange(1, 600)) for _ in range(200)),
    ]
    for i in range(len(good)):  # every single-byte corruption
        blobs.append(good[:i] + bytes([good[i] ^ 0x01]) + good[i + 1 :])
    for blob in blobs:
        with pytest.raises(BadSignature):
            sshsig.verify(blob, b"the message")


def test_armor_round_trip(good: bytes) -> None:
    text = sshsig.armor(good)
    assert text.startswith("-----BEGIN SSH SIGNATURE-----\n")
    assert all(len(line) <= 70 for line in text.splitlines())
    assert sshsig.dearmor("junk before\n" + text) == good
    for bad in ["", "no armor", text.replace("A", "*", 1)]:
        with pytest.raises(BadSignature):
            sshsig.dearmor(bad)
