"""Key loading, fingerprints and signature checks against stock ssh-keygen."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_ssh_private_key,
)

from meshsync.crypto.keys import (
    KeyLoadError,
    KeySigner,
    find_key,
    fingerprint,
    load_public_blob,
    load_signer,
    public_key_line,
    verify_signature,
)
from meshsync.crypto.sshwire import put_mpint, put_string

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen missing")

KEY_ARGS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa": ["-t", "ecdsa", "-b", "256"],
    "rsa": ["-t", "rsa", "-b", "3072"],
}


def keygen(path: Path, kind: str, *extra: str, phrase: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        "ssh-keygen",
        "-q",
        *KEY_ARGS[kind],
        *extra,
        "-N",
        phrase,
        "-C",
        "me@box",
        "-f",
        str(path),
    ]
    subprocess.run(cmd, check=True)
    return path


def pub_blob(key: Path) -> bytes:
    return load_public_blob(Path(f"{key}.pub").read_text())


@pytest.fixture(scope="module", params=list(KEY_ARGS))
def key(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keygen(tmp_path_factory.mktemp(request.param) / "id", request.param)


def test_fingerprint_and_line_match_ssh_keygen(key: Path) -> None:
    listed = subprocess.run(
        ["ssh-keygen", "-lf", f"{key}.pub"], check=True, capture_output=True, text=True
    ).stdout
    assert fingerprint(pub_blob(key)) == listed.split()[1]
    assert public_key_line(pub_blob(key), "me@box") == Path(f"{key}.pub").read_text().strip()


def test_loaded_signer_matches_pub_and_verifies(key: Path) -> None:
    signer = load_signer(key, None)
    assert signer.public_blob == pub_blob(key)
    sig = signer.sign(b"data")
    assert verify_signature(signer.public_blob, b"data", sig)
    assert not verify_signature(signer.public_blob, b"datA", sig)


def test_an_ed25519_signature_is_the_one_the_standard_defines() -> None:
    # Signed by libsodium, for speed: Ed25519 is deterministic, so it must be, byte for byte,
    # the signature cryptography's implementation makes.
    key = Ed25519PrivateKey.generate()
    for data in (b"", b"data", bytes(range(256)) * 300):
        assert KeySigner(key).sign(data) == (
            put_string(b"ssh-ed25519") + put_string(key.sign(data)))


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_pem_key_loads(tmp_path: Path, kind: str) -> None:
    path = keygen(tmp_path / "id", kind, "-m", "PEM")
    assert b"-----BEGIN OPENSSH" not in path.read_bytes()
    signer = load_signer(path, None)
    assert signer.public_blob == pub_blob(path)
    assert verify_signature(signer.public_blob, b"x", signer.sign(b"x"))


def test_find_key_order(tmp_path: Path) -> None:
    ssh, state = tmp_path / "ssh", tmp_path / "state"
    ssh.mkdir()
    for name in ("id_rsa", "id_ecdsa"):
        (ssh / name).write_text("x")
    assert find_key(None, ssh, state) == ssh / "id_ecdsa"
    (ssh / "id_ed25519").write_text("x")
    assert find_key(None, ssh, state) == ssh / "id_ed25519"
    assert find_key(ssh / "id_rsa", ssh, state) == ssh / "id_rsa"
    with pytest.raises(KeyLoadError, match="does not exist"):
        find_key(tmp_path / "nope", ssh, state)
    assert not state.exists()


def test_find_key_generates_once(tmp_path: Path) -> None:
    state = tmp_path / "state" / "meshsync"
    path = find_key(None, tmp_path / "no-ssh", state)
    assert path == state / "key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], check=True, capture_output=True, text=True
    ).stdout.split()
    pub = (state / "key.pub").read_text().split()
    assert derived[:2] == pub[:2]
    assert pub[0] == "ssh-ed25519"
    assert pub[2] == f"meshsync@{socket.gethostname()}"
    before = path.read_bytes()
    assert find_key(None, tmp_path / "no-ssh", state) == path
    assert path.read_bytes() == before
    assert load_signer(path, None).public_blob == pub_blob(path)


@pytest.mark.parametrize("pem", [False, True])
def test_passphrase_key_without_agent(tmp_path: Path, pem: bool) -> None:
    extra = ["-m", "PEM"] if pem else []
    path = keygen(tmp_path / "id", "ecdsa" if pem else "ed25519", *extra, phrase="secret1")
    with pytest.raises(KeyLoadError, match=r"passphrase-protected.*ssh-add"):
        load_signer(path, None)
    with pytest.raises(KeyLoadError, match="ssh-add"):
        load_signer(path, str(tmp_path / "no-such-agent.sock"))


def test_unusable_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="cannot read"):
        load_signer(tmp_path / "missing", None)
    (tmp_path / "junk").write_text("hello\n")
    with pytest.raises(KeyLoadError, match="not a usable private key"):
        load_signer(tmp_path / "junk", None)
    ed448 = Ed448PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    (tmp_path / "ed448").write_bytes(ed448)
    with pytest.raises(KeyLoadError, match="ed25519, ecdsa or rsa"):
        load_signer(tmp_path / "ed448", None)


def test_verify_signature_rejections(tmp_path: Path) -> None:
    rsa_path = keygen(tmp_path / "rsa", "rsa")
    ed_a, ed_b = keygen(tmp_path / "a", "ed25519"), keygen(tmp_path / "b", "ed25519")
    sig_b = load_signer(ed_b, None).sign(b"m")
    assert not verify_signature(pub_blob(ed_a), b"m", sig_b)  # another key's signature

    rsa_key = load_ssh_private_key(rsa_path.read_bytes(), None)
    assert isinstance(rsa_key, RSAPrivateKey)
    raw = rsa_key.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
    assert verify_signature(pub_blob(rsa_path), b"m", put_string(b"rsa-sha2-256") + put_string(raw))
    sha1 = rsa_key.sign(b"m", padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    assert not verify_signature(pub_blob(rsa_path), b"m", put_string(b"ssh-rsa") + put_string(sha1))
    # right bytes under a label for another key type, and a key-type/algorithm mismatch
    ed_raw = sig_b[4 + len(b"ssh-ed25519") + 4 :]
    mislabeled = put_string(b"ecdsa-sha2-nistp256") + put_string(ed_raw)
    assert not verify_signature(pub_blob(ed_b), b"m", mislabeled)
    assert not verify_signature(pub_blob(rsa_path), b"m", sig_b)
    for garbage in (b"", b"\xff" * 40, sig_b[:-1], sig_b + b"\x00"):
        assert not verify_signature(pub_blob(ed_b), b"m", garbage)
        assert not verify_signature(garbage, b"m", sig_b)


def test_key_signer_rejects_unknown_curve() -> None:
    with pytest.raises(KeyLoadError, match="curve"):
        KeySigner(ec.generate_private_key(ec.SECP256K1()))


def test_an_rsa_key_with_a_huge_exponent_is_refused() -> None:
    # Verifying costs as many bits as the exponent has: a stranger's crafted key would make
    # each of its requests cost milliseconds before we even knew it was not trusted.
    modulus = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    for exponent, usable in ((65537, True), (2**32 + 15, False), (modulus - 2, False)):
        blob = put_string(b"ssh-rsa") + put_mpint(exponent) + put_mpint(modulus)
        if usable:
            assert load_public_blob(blob) == blob
        else:
            with pytest.raises(ValueError, match="exponent over 2"):
                load_public_blob(blob)


@pytest.mark.parametrize("point", [b"", b"\x04", b"\x00", b"\x04" + bytes(64)])
def test_an_ecdsa_key_with_no_usable_point_is_refused_as_unusable(point: bytes) -> None:
    # cryptography 45 let an empty point escape as IndexError: a peer's key must never.
    blob = put_string(b"ecdsa-sha2-nistp256") + put_string(b"nistp256") + put_string(point)
    with pytest.raises(ValueError):  # noqa: PT011 - the message is the library's
        load_public_blob(blob)
    assert not verify_signature(blob, b"data", put_string(b"ecdsa-sha2-nistp256")
                                + put_string(b""))
