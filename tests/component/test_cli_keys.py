"""What `trust` and `untrust` take as given: key lines (whose base64 may hold slashes), IDs,
and files of key lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsync.cli.keys import UsageError, key_texts
from meshsync.control.protocol import ControlError

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
