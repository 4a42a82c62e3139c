"""The ssh-agent client against a real ssh-agent holding passphrase-protected keys."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from meshsync.crypto import runkey, sshsig
from meshsync.crypto.agent import AgentError, AgentSigner, list_identities
from meshsync.crypto.keys import KeyLoadError, load_public_blob, load_signer
from meshsync.crypto.sshwire import Reader
from tests.component import openssh
from tests.component.openssh import ssh_agent, ssh_keygen_verify

pytestmark = pytest.mark.skipif(
    shutil.which("ssh-agent") is None
    or shutil.which("ssh-keygen") is None
    or shutil.which("ssh-add") is None,
    reason="ssh-agent, ssh-add or ssh-keygen missing",
)

PHRASE = "correct horse"
KEY_ARGS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa": ["-t", "ecdsa", "-b", "256"],
    "rsa": ["-t", "rsa", "-b", "3072"],
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Passphrase-protected keys of every type, plus one the agent never gets."""
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name, args in [*KEY_ARGS.items(), ("stranger", ["-t", "ed25519"])]:
        subprocess.run(
            ["ssh-keygen", "-q", *args, "-N", PHRASE, "-C", name, "-f", str(d / name)], check=True
        )
        out[name] = d / name
    return out


@pytest.fixture
def agent() -> Iterator[str]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    sock_dir = Path(tempfile.mkdtemp(prefix="msa"))
    try:
        with ssh_agent(sock_dir) as sock:
            yield str(sock)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def ssh_add(sock: str, key: Path, tmp_path: Path) -> None:
    openssh.ssh_add(Path(sock), key, PHRASE, tmp_path)


@pytest.mark.parametrize("kind", list(KEY_ARGS))
def test_agent_key_signs_sshsig(
    agent: str, keys: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    ssh_add(agent, keys[kind], tmp_path)
    signer = load_signer(keys[kind], agent)
    assert isinstance(signer, AgentSigner)
    blob = sshsig.sign(signer, b"sync me")
    assert ssh_keygen_verify(tmp_path, keys[kind], sshsig.armor(blob), b"sync me")
    assert sshsig.verify(blob, b"sync me") == signer.public_blob
    algorithm = Reader(signer.sign(b"x")).string()
    assert (
        algorithm
        == {"rsa": b"rsa-sha2-512", "ed25519": b"ssh-ed25519", "ecdsa": b"ecdsa-sha2-nistp256"}[
            kind
        ]
    )


def test_list_identities_and_refusals(agent: str, keys: dict[str, Path], tmp_path: Path) -> None:
    assert list_identities(agent) == []
    ssh_add(agent, keys["ed25519"], tmp_path)
    assert list_identities(agent) == [load_public_blob(Path(f"{keys['ed25519']}.pub").read_text())]
    with pytest.raises(KeyLoadError, match=r"no ssh-agent holds it.*ssh-add"):
        load_signer(keys["stranger"], agent)
    stranger = load_public_blob(Path(f"{keys['stranger']}.pub").read_text())
    with pytest.raises(AgentError, match="refused"):
        AgentSigner(agent, stranger).sign(b"x")
    with pytest.raises(AgentError):
        list_identities(str(tmp_path / "absent.sock"))


def test_concurrent_signing(agent: str, keys: dict[str, Path], tmp_path: Path) -> None:
    ssh_add(agent, keys["ed25519"], tmp_path)
    signer = load_signer(keys["ed25519"], agent)
    messages = [f"message {i}".encode() for i in range(32)]
    with ThreadPoolExecutor(8) as pool:
        blobs = list(pool.map(lambda m: sshsig.sign(signer, m), messages))
    for message, blob in zip(messages, blobs, strict=True):
        assert sshsig.verify(blob, message) == signer.public_blob


@pytest.mark.parametrize("kind", list(KEY_ARGS))
def test_a_node_signs_by_a_run_key_the_agent_vouched_for_once(
    agent: str, keys: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    """A key in the agent signs one vouch when the node starts, not each version, request and
    answer (a round trip each: 0.6 ms for ed25519, 2.5 for RSA); what the node signs still
    names that key, and it goes on signing when the agent forgets the key."""
    ssh_add(agent, keys[kind], tmp_path)
    signer = load_signer(keys[kind], agent)
    run = runkey.RunSigner(signer)
    subprocess.run(["ssh-add", "-D", "-q"], env={**os.environ, "SSH_AUTH_SOCK": agent},
                   check=True, capture_output=True)
    with pytest.raises(AgentError):
        signer.sign(b"x")  # the agent holds nothing now
    messages = [f"record {i}".encode() for i in range(100)]
    signatures = [run.sign(m) for m in messages]
    for message, signature in zip(messages, signatures, strict=True):
        assert signature.startswith(runkey.MAGIC)
        assert runkey.verify(signature, message) == signer.public_blob
    with pytest.raises(sshsig.BadSignature):
        runkey.verify(signatures[0], messages[1])
    # The vouch is an SSHSIG that stock OpenSSH checks.
    vouch = Reader(signatures[0][len(runkey.MAGIC):]).string()
    run_key = Reader(signatures[0][len(runkey.MAGIC) + 4 + len(vouch):]).string()
    assert ssh_keygen_verify(tmp_path, keys[kind], sshsig.armor(vouch),
                             runkey.VOUCH_PREFIX + run_key)
