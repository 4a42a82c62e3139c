"""What `trust` and `untrust` take as given: key lines (whose base64 may hold slashes), IDs,
and files of key lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshsync.cli.keys import UsageError, key_texts, untrust
from meshsync.control.protocol import ControlError
from meshsync.core.ids import NodeId
from meshsync.crypto.keys import KeySigner
from meshsync.crypto.trust import PublicKey, TrustStore

# A real ed25519 key line whose base64 holds slashes, as many do.
SLASHED = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmJchQ+z9IuwZRBRyrMCF82iFWE8T1/zdvUAH7ffRD2"
           " meshsync@vm")


def test_a_key_line_or_id_with_slashes_is_taken_as_given_not_as_a_path() -> None:
    assert key_texts(SLASHED) == [SLASHED]
    node = "SHA256:y0Op4iEzZeyRrtckR5dZy1Lp1L6BYnSy/Lp1b7Epjrc"
    assert key_texts(node) == [node]


def test_a_file_gives_its_key_lines_and_a_private_key_or_missing_file_is_refused(
        tmp_path: Path) -> None:
    keys = tmp_path / "keys.pub"
    keys.write_text(f"# two machines\n{SLASHED}\n\n{SLASHED} again\n")
    assert key_texts(str(keys)) == [SLASHED, f"{SLASHED} again"]
    private = tmp_path / "id_ed25519"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn...\n")
    with pytest.raises(UsageError, match="is a private key: give its public half"):
        key_texts(str(private))
    with pytest.raises(ControlError, match="no such file"):
        key_texts(str(tmp_path / "missing.pub"))


def test_untrust_takes_a_short_id_as_the_peers_table_shows_it_with_its_slash_as_underscore(
        tmp_path: Path) -> None:
    for _ in range(1000):  # about one key in eight has a / in its first 8 ID characters
        blob = _ed25519_blob()
        node = NodeId.of_key(blob)
        if "_" in node.short:
            break
    else:
        raise AssertionError("no key among 1000 had / in its first 8 ID characters")
    store = TrustStore([], tmp_path / "trusted_keys")
    assert store.add(PublicKey(blob, "laptop"))
    assert untrust(store, node.short) == {"removed": [str(node)]}
    assert not store.knows(blob)


def _ed25519_blob() -> bytes:
    return KeySigner(Ed25519PrivateKey.generate()).public_blob
