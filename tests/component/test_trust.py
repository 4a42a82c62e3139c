"""authorized_keys lines and options as sshd reads them, and the live-reloading trust store."""

from __future__ import annotations

import base64
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import assume, given
from hypothesis import strategies as st

from meshsync.core.ids import NodeId
from meshsync.core.keyblob import check_key
from meshsync.crypto.trust import (
    INTRODUCER,
    PublicKey,
    TrustStore,
    matches,
    parse_expiry,
    parse_grant,
    parse_key_line,
    parse_patterns,
    wildcard,
)

NEUTRAL = [
    "no-pty", "no-port-forwarding", "no-agent-forwarding", "no-X11-forwarding", "no-user-rc",
    'permitopen="10.0.0.1:80"', 'permitlisten="localhost:8080"', 'environment="X=1 2"', "pty",
    "agent-forwarding", "port-forwarding", "X11-forwarding", "user-rc", "no-touch-required",
    "verify-required", "NO-PTY",
]
OTHER_USES = [
    'command="backup-only"', "restrict", "restrict,pty", "cert-authority",
    'cert-authority,principals="alice"', 'tunnel="0"', 'COMMAND="x"', 'no-pty,command="x"',
]
UNREADABLE = [
    "frobnicate", "no-restrict", "no-cert-authority", "no-pty,", "no-pty,,no-pty", "no-pty=x",
    'no-pty="x"', "command", "from=10.0.0.1", 'from="10.0.0.1"x', 'from="a",from="b"',
    'from="10.0.0.1', 'from="a\\"', 'expiry-time="2030"', 'expiry-time="20301301"',
    'from=""', 'from="10.0.0.0/8,"', 'from="!"', 'from="10.0.0.1/24"', 'from="10.0.0.0/33"',
    'from="fe80::1/64"', 'from="10.0.0.0/ 8"', 'from="10.0.0.1, 10.0.0.2"', "restricted",
]


def line_of(
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    comment: str = "c",
) -> str:
    raw = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{raw} {comment}"


def blob_of(line: str) -> bytes:
    key = parse_key_line(line)
    assert key is not None
    return key.blob


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return [
        line_of(ed25519.Ed25519PrivateKey.generate(), "alice@a"),
        line_of(ed25519.Ed25519PrivateKey.generate(), "bob@box"),
        line_of(ec.generate_private_key(ec.SECP384R1()), "carol"),
        line_of(rsa.generate_private_key(65537, 2048), "dave with spaces"),
    ]


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    ssh = tmp_path / "ssh"
    ssh.mkdir(mode=0o700)
    return ssh / "authorized_keys"


def store_of(path: Path, text: str, wall: float | None = None) -> TrustStore:
    path.write_text(text)
    clock = time.time if wall is None else (lambda: wall)
    return TrustStore([path], path.parent.parent / "state" / "trusted_keys", clock)


def trusted_from(patterns: str, address: str) -> bool:
    return matches(parse_patterns(patterns), address)


# -- lines and options ---------------------------------------------------------------------------


def test_plain_lines_and_neutral_options_give_the_key(lines: list[str]) -> None:
    for line in lines:
        key = parse_key_line(line)
        assert key is not None
        assert key.line == line
    alice = parse_key_line(lines[0])
    assert alice == PublicKey(blob_of(lines[0]), "alice@a")
    for option in NEUTRAL:
        key = parse_key_line(f"{option} {lines[2]}")
        assert key is not None, option
        assert key.comment == "carol"
    assert parse_key_line(f'\tno-pty,environment="A=a b",no-user-rc\t{lines[3]}') is not None
    rsa_key = parse_key_line(lines[3])
    assert rsa_key is not None
    assert rsa_key.comment == "dave with spaces"


def test_lines_that_narrow_or_refuse_trust_give_no_key_to_add(lines: list[str]) -> None:
    # `meshsync trust` appends a bare key: it must not drop a from= or expiry-time= on the way.
    for option in [*OTHER_USES, *UNREADABLE, 'from="10.0.0.1"', 'expiry-time="20990101"']:
        assert parse_key_line(f"{option} {lines[0]}") is None, option


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
        f"no-pty,{kind} {b64}",
        f"no-pty {kind}",
        "hello world",
        "x" * 100_000,
        '"' * 50_000,
        'from="' + "\\" * 50_000,
        "no-pty," * 20_000,
        f"ecdsa-sha2-nistp256 {lines[2].split()[1]}",
    ]:
        assert parse_grant(junk) is None, junk[:80]


def test_command_restricted_key_is_not_trusted_for_sync(
    keys_file: Path, lines: list[str]
) -> None:
    for option in OTHER_USES:
        assert parse_grant(f"{option} {lines[0]}") is None, option
    store = store_of(keys_file, f'command="backup-only" {lines[0]}\nrestrict,pty {lines[1]}\n')
    for line in lines[:2]:
        assert not store.is_trusted(blob_of(line), "10.0.0.1")
        assert not store.knows(blob_of(line))


def test_neutral_options_neither_grant_nor_deny(lines: list[str]) -> None:
    for option in NEUTRAL:
        grant = parse_grant(f"{option} {lines[0]}")
        assert grant is not None, option
        assert grant.allows("192.0.2.7", time.time()), option


def test_unknown_or_unreadable_options_are_not_trusted(keys_file: Path, lines: list[str]) -> None:
    for option in UNREADABLE:
        assert parse_grant(f"{option} {lines[0]}") is None, option
    store = store_of(keys_file, f"frobnicate {lines[0]}\n")
    assert not store.is_trusted(blob_of(lines[0]), "10.0.0.1")
    assert not store.knows(blob_of(lines[0]))


def test_quoted_values_hold_spaces_commas_and_escaped_quotes(lines: list[str]) -> None:
    grant = parse_grant(f'environment="X=a \\"b, c\\" d",from="10.0.0.1"\t {lines[0]}')
    assert grant is not None
    assert grant.key.comment == "alice@a"
    assert grant.allows("10.0.0.1", 0.0)
    assert not grant.allows("10.0.0.2", 0.0)
    # Only \" escapes, as in sshd: before the closing quote, even \\ escapes it instead.
    assert parse_grant(f'environment="X=a\\b" {lines[0]}') is not None
    assert parse_grant(f'environment="X=\\\\" {lines[0]}') is None


@given(st.text(alphabet='a-=",\\! \t*?/:.0123456789', max_size=60))
def test_no_options_field_escapes_the_parser(options: str) -> None:
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBVcSRbINz1MNa0M1Vq7AbO5rxGj2yYmz1V5YoHY6o2M c"
    grant = parse_grant(f"{options} {line}")
    assert grant is None or grant.key.comment == "c"


# -- from= ---------------------------------------------------------------------------------------


def test_from_pattern_allows_only_matching_addresses(keys_file: Path, lines: list[str]) -> None:
    store = store_of(keys_file, f'from="10.0.0.*,192.168.1.?,fe80::*" {lines[0]}\n{lines[1]}\n')
    blob = blob_of(lines[0])
    assert store.is_trusted(blob_of(lines[1]), "?")  # a line without from= allows any address
    for address in ["10.0.0.1", "10.0.0.254", "192.168.1.7", "fe80::1", "FE80::ab"]:
        assert store.is_trusted(blob, address), address
    # Not an IP address ("?": the peer's is unknown) matches no from= list.
    for address in ["10.0.1.1", "192.168.1.17", "192.168.10.7", "fe81::1", "?", "", "::1",
                    "10.0.0.1:7000", "[fe80::1]"]:
        assert not store.is_trusted(blob, address), address
    assert store.knows(blob)  # from= says where it may connect from, not whose records to take


def test_negated_from_pattern_denies(keys_file: Path, lines: list[str]) -> None:
    store = store_of(keys_file, f'from="10.0.0.0/24,!10.0.0.13,10.0.0.13" {lines[0]}\n')
    blob = blob_of(lines[0])
    assert store.is_trusted(blob, "10.0.0.12")
    assert not store.is_trusted(blob, "10.0.0.13")
    assert not trusted_from("!10.0.0.13", "10.0.0.12")  # a negation alone allows no one
    assert not trusted_from("*,!10.0.0.*", "10.0.0.9")
    assert trusted_from("*,!10.0.0.*", "10.0.1.9")
    assert not trusted_from("2001:db8::/32,!2001:db8::/48", "2001:db8::5")
    assert trusted_from("2001:db8::/32,!2001:db8::/48", "2001:db8:1::5")


def test_cidr_from_pattern(keys_file: Path, lines: list[str]) -> None:
    assert trusted_from("10.0.0.0/8", "10.200.3.4")
    assert not trusted_from("10.0.0.0/8", "11.0.0.1")
    assert trusted_from("192.168.4.0/22", "192.168.7.255")
    assert not trusted_from("192.168.4.0/22", "192.168.8.0")
    assert trusted_from("2001:db8::/32", "2001:DB8:ffff::1")
    assert not trusted_from("2001:db8::/32", "2001:db9::1")
    assert not trusted_from("::/0", "10.0.0.1")  # families never match each other
    assert trusted_from("0.0.0.0/0", "::ffff:10.0.0.1")  # a dual-stack view of an IPv4 peer
    assert not trusted_from("*,!::ffff:10.0.0.0/120", "10.0.0.5")
    assert trusted_from("0:0::1", "::1")  # a bare address is compared as an address
    # A network sshd would refuse (host bits set, mask too long) refuses the whole line.
    for bad in ["10.0.0.1/8", "10.0.0.0/33", "2001:db8::1/32", "2001:db8::/129"]:
        store = store_of(keys_file, f'from="{bad},10.0.0.1" {lines[0]}\n')
        assert not store.is_trusted(blob_of(lines[0]), "10.0.0.1"), bad


def test_host_names_in_from_never_match(lines: list[str]) -> None:
    grant = parse_grant(f'from="localhost,*.lan,ip6-localhost" {lines[0]}')
    assert grant is not None
    for address in ["127.0.0.1", "::1", "localhost", "box.lan"]:
        assert not grant.allows(address, 0.0), address


@given(st.ip_addresses(v=4), st.integers(0, 32), st.ip_addresses(v=4))
def test_an_ipv4_network_matches_exactly_its_addresses(
    base: IPv4Address, bits: int, address: IPv4Address
) -> None:
    network = IPv4Network(f"{base}/{bits}", strict=False)
    assert trusted_from(str(network), str(address)) == (address in network)
    assert trusted_from(f"*,!{network}", str(address)) == (address not in network)
    assert trusted_from(str(network), f"::ffff:{address}") == (address in network)


@given(st.ip_addresses(v=6), st.integers(0, 128), st.ip_addresses(v=6))
def test_an_ipv6_network_matches_exactly_its_addresses(
    base: IPv6Address, bits: int, address: IPv6Address
) -> None:
    network = IPv6Network(f"{base}/{bits}", strict=False)
    # Mapped IPv4 peers and networks are judged as IPv4, above.
    assume(address.ipv4_mapped is None)
    assume(not network.subnet_of(IPv6Network("::ffff:0:0/96")))
    assert trusted_from(str(network), str(address)) == (address in network)
    assert trusted_from(f"*,!{network}", str(address)) == (address not in network)


@given(st.lists(st.text(alphabet="ab*?", min_size=1, max_size=6), min_size=1, max_size=4),
       st.ip_addresses())
def test_a_matching_negation_denies_whatever_else_matches(
    others: list[str], address: IPv4Address | IPv6Address
) -> None:
    assert not trusted_from(",".join(["*", *others, f"!{address}"]), str(address))


@given(st.text(alphabet="ab.:", max_size=12), st.text(alphabet="ab.:*?", max_size=12))
def test_wildcards_are_star_and_question_mark_only(text: str, pattern: str) -> None:
    regex = "".join({"*": ".*", "?": "."}.get(c, re.escape(c)) for c in pattern)
    assert wildcard(text, pattern) == bool(re.fullmatch(regex, text, re.DOTALL))


# -- expiry-time= --------------------------------------------------------------------------------


def test_expired_key_is_not_trusted(keys_file: Path, lines: list[str]) -> None:
    end = datetime(2030, 6, 1, 12, 30, 15).timestamp()  # local time, as sshd
    text = f'no-pty,expiry-time="20300601123015" {lines[0]}\n'
    blob = blob_of(lines[0])
    assert store_of(keys_file, text, wall=end - 86400).is_trusted(blob, "10.0.0.1")
    assert store_of(keys_file, text, wall=end).is_trusted(blob, "10.0.0.1")
    assert not store_of(keys_file, text, wall=end + 1).is_trusted(blob, "10.0.0.1")
    assert not store_of(keys_file, text, wall=end + 1).knows(blob)
    # The earliest of several expiry-times counts.
    both = f'expiry-time="20991231",expiry-time="20300601123015" {lines[0]}\n'
    assert not store_of(keys_file, both, wall=end + 1).is_trusted(blob, "10.0.0.1")


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tokyo")
def test_expiry_time_is_local_unless_marked_utc() -> None:
    utc = datetime(2030, 6, 1, tzinfo=UTC).timestamp()
    assert parse_expiry("20300601") == utc - 9 * 3600
    assert parse_expiry("203006010900") == utc
    assert parse_expiry("20300601Z") == utc
    assert parse_expiry("20300601000000UTC") == utc
    wide = "".join(chr(0xFF10 + int(c)) for c in "20300601")  # digits, but not ASCII ones
    for bad in ["2030", "2030060112", "20300631", "20302601", "19700101Z", wide, "x"]:
        with pytest.raises(ValueError):  # noqa: PT011 - the contract is ValueError
            parse_expiry(bad)


# -- the store -----------------------------------------------------------------------------------


def test_a_key_on_several_lines_is_trusted_when_any_line_allows(
    keys_file: Path, lines: list[str]
) -> None:
    blob = blob_of(lines[0])
    store = store_of(keys_file, f'command="ls" {lines[0]}\nfrom="10.0.0.1" {lines[0]}\n'
                                f'from="10.0.0.2",expiry-time="20000101" {lines[0]}\n')
    assert store.is_trusted(blob, "10.0.0.1")
    assert not store.is_trusted(blob, "10.0.0.2")  # that line has expired
    other = keys_file.parent.parent / "state" / "trusted_keys"
    other.parent.mkdir(mode=0o700)
    other.write_text(f'from="10.0.0.2" {lines[0]}\n')
    assert store.is_trusted(blob, "10.0.0.2")  # a line in another file counts too


def test_knows_ignores_from_but_not_expiry_or_command(keys_file: Path, lines: list[str]) -> None:
    a, b, c, d = map(blob_of, lines)
    store = store_of(keys_file, f'from="10.9.9.9" {lines[0]}\nexpiry-time="20000101" {lines[1]}\n'
                                f'command="x" {lines[2]}\n')
    assert store.knows(a)
    assert not store.knows(b)
    assert not store.knows(c)
    assert not store.knows(d)


def test_store_follows_edits(keys_file: Path, lines: list[str]) -> None:
    a, b, c = map(blob_of, lines[:3])
    store = TrustStore([keys_file, keys_file.parent / "missing"], keys_file.parent / "trusted")
    assert not store.knows(a)
    keys_file.write_text(f"# mine\n{lines[0]}\n")
    assert store.is_trusted(a, "10.0.0.1")
    assert not store.is_trusted(b, "10.0.0.1")
    keys_file.write_text(f"# mine\n{lines[1]}\n")  # same size as before: the mtime must tell
    assert store.is_trusted(b, "10.0.0.1")
    assert not store.is_trusted(a, "10.0.0.1")
    keys_file.write_text(f"{lines[1]}\nno-pty {lines[2]}\n")
    assert [store.knows(k) for k in (a, b, c)] == [False, True, True]


def set_old_mtime(path: Path) -> None:
    old = time.time_ns() - 10**10  # well past the racy window
    os.utime(path, ns=(old, old))


def test_unchanged_stamp_is_served_from_cache(keys_file: Path, lines: list[str]) -> None:
    a, b = blob_of(lines[0]), blob_of(lines[1])
    keys_file.write_text(lines[0] + "\n")
    set_old_mtime(keys_file)
    store = TrustStore([keys_file], keys_file.parent / "trusted")
    assert store.knows(a)
    mtime = keys_file.stat().st_mtime_ns
    keys_file.write_text(lines[1] + "\n")  # same size and inode; put the old mtime back
    os.utime(keys_file, ns=(mtime, mtime))
    assert store.knows(a)  # proves the file was not re-read
    assert not store.knows(b)
    os.utime(keys_file)
    assert store.knows(b)


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
    assert all(store.is_trusted(k.blob, "10.0.0.1") for k in (a, b, c))
    store2 = TrustStore([], user)
    assert store2.add(b)
    assert user.read_text() == f"{lines[0]}\n{lines[1]}\n"


def test_add_trusts_a_key_that_a_narrower_line_lists(tmp_path: Path, lines: list[str]) -> None:
    user = tmp_path / "authorized_keys"
    user.write_text(f'from="10.0.0.1" {lines[0]}\ncommand="x" {lines[1]}\n')
    store = TrustStore([user], tmp_path / "state" / "trusted_keys")
    for line in lines[:2]:
        key = parse_key_line(line)
        assert key is not None
        assert not store.is_trusted(key.blob, "10.0.0.2")
        assert store.add(key)  # the user asked for it: `meshsync trust` is not silent
        assert store.is_trusted(key.blob, "10.0.0.2")
        assert not store.add(key)


# -- StrictModes ---------------------------------------------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "meshsync.trust" and r.levelno == logging.WARNING]


def test_world_writable_authorized_keys_is_ignored_with_one_warning(
    keys_file: Path, lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    blob = blob_of(lines[0])
    store = store_of(keys_file, lines[0] + "\n")
    keys_file.chmod(0o666)
    set_old_mtime(keys_file)
    for _ in range(3):
        assert not store.is_trusted(blob, "10.0.0.1")
        assert not store.knows(blob)
    [warning] = warnings_of(caplog)
    assert str(keys_file) in warning
    assert f"chmod go-w {keys_file}" in warning
    keys_file.chmod(0o644)  # a chmod alone changes no mtime: it is noticed all the same
    assert store.is_trusted(blob, "10.0.0.1")
    keys_file.chmod(0o620)
    assert not store.is_trusted(blob, "10.0.0.1")
    assert not store.is_trusted(blob, "10.0.0.1")
    assert len(warnings_of(caplog)) == 2  # once more, for the new mistake
    keys_file.chmod(0o622)
    assert not store.is_trusted(blob, "10.0.0.1")
    assert len(warnings_of(caplog)) == 3


def test_group_writable_directory_is_ignored(
    keys_file: Path, lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    store = store_of(keys_file, lines[0] + "\n")
    keys_file.parent.chmod(0o770)
    assert not store.is_trusted(blob_of(lines[0]), "10.0.0.1")
    assert not store.is_trusted(blob_of(lines[0]), "10.0.0.1")
    [warning] = warnings_of(caplog)
    assert f"chmod go-w {keys_file.parent}" in warning
    keys_file.parent.chmod(0o700)
    assert store.is_trusted(blob_of(lines[0]), "10.0.0.1")


def test_a_symlink_is_judged_by_the_file_it_names(
    keys_file: Path, lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    shared = keys_file.parent.parent / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    (shared / "keys").write_text(lines[0] + "\n")
    keys_file.symlink_to(shared / "keys")
    store = TrustStore([keys_file], keys_file.parent / "trusted")
    assert not store.is_trusted(blob_of(lines[0]), "10.0.0.1")
    [warning] = warnings_of(caplog)
    assert f"chmod go-w {shared}" in warning


def test_a_file_owned_by_another_user_is_ignored(
    keys_file: Path,
    lines: list[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = store_of(keys_file, lines[0] + "\n")
    owner, me = 4242, os.geteuid()
    if me == 0:
        os.chown(keys_file, owner, -1)
    else:  # only root can give a file away: be someone else instead
        owner, me = me, me + 4242
        monkeypatch.setattr(os, "geteuid", lambda: me)
    assert not store.is_trusted(blob_of(lines[0]), "10.0.0.1")
    [warning] = warnings_of(caplog)
    assert f"uid {owner}" in warning
    assert f"chown {me} {keys_file}" in warning


def test_a_fifo_is_ignored_without_blocking(
    keys_file: Path, lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    os.mkfifo(keys_file, 0o600)
    store = TrustStore([keys_file], keys_file.parent / "trusted")
    answer: list[bool] = []
    reader = threading.Thread(
        target=lambda: answer.append(store.knows(blob_of(lines[0]))), daemon=True)
    reader.start()
    reader.join(5)
    assert answer == [False]
    [warning] = warnings_of(caplog)
    assert "not a regular file" in warning


# -- introducers ---------------------------------------------------------------------------------


@pytest.fixture
def two_files(tmp_path: Path) -> tuple[Path, Path]:
    """authorized_keys and the state directory's trusted_keys, empty."""
    for name in ("ssh", "state"):
        (tmp_path / name).mkdir(mode=0o700)
    files = tmp_path / "ssh" / "authorized_keys", tmp_path / "state" / "trusted_keys"
    for path in files:
        path.write_text("")
    return files


def marked(line: str, options: str = "") -> str:
    return f"{options}{',' if options else ''}{INTRODUCER} {line}\n"


def test_the_introducer_mark_is_read_in_trusted_keys_only(
    two_files: tuple[Path, Path], lines: list[str]
) -> None:
    grant = parse_grant(f'no-pty,from="10.0.0.1",{INTRODUCER} {lines[0]}', ours=True)
    assert grant is not None
    assert grant.introducer
    assert grant.allows("10.0.0.1", 0.0)
    assert not grant.allows("10.0.0.2", 0.0)
    plain = parse_grant(lines[0], ours=True)
    assert plain is not None
    assert not plain.introducer
    # sshd refuses a line with an option it does not know: in authorized_keys, so do we.
    assert parse_grant(marked(lines[0])) is None
    assert parse_key_line(marked(lines[0])) is None  # `meshsync trust` takes bare lines
    assert parse_grant(f'{INTRODUCER}="yes" {lines[0]}', ours=True) is None
    assert parse_grant(marked(lines[0], 'command="x"'), ours=True) is None
    authorized, trusted = two_files
    authorized.write_text(marked(lines[0]))
    trusted.write_text(marked(lines[1]))
    store = TrustStore([authorized], trusted)
    a, b = blob_of(lines[0]), blob_of(lines[1])
    assert not store.knows(a)
    assert not store.is_introducer(a)
    assert store.is_trusted(b, "10.0.0.1")
    assert store.is_introducer(b)


def test_keys_an_introducer_announces_are_trusted_from_anywhere_while_it_announces_them(
    two_files: tuple[Path, Path], lines: list[str]
) -> None:
    authorized, trusted = two_files
    a, b, c, d = map(blob_of, lines)
    trusted.write_text(marked(lines[0], 'from="10.0.0.1"'))
    store = TrustStore([authorized], trusted)
    assert not store.knows(b)
    assert store.introduce(a, [b, c, b]) == {b, c}
    # Its from= says where the introducer may connect from, not where the others are.
    for key in (b, c):
        assert store.is_trusted(key, "192.0.2.9")
        assert store.knows(key)
        assert store.introducers_of(key) == [a]
    assert set(store.known_keys()) == {a, b, c}
    assert store.known_keys(introduced=False) == [a]
    assert store.introduce(a, [c, b]) == set()  # the same again: nothing changed
    assert store.introduce(a, [b, d]) == {c, d}  # its next word withdraws c
    assert not store.knows(c)
    assert store.is_trusted(d, "10.0.0.9")
    assert store.introduce(a, []) == {b, d}
    assert not store.knows(b)
    assert set(store.known_keys()) == {a}


def test_what_a_peer_not_marked_introducer_announces_is_ignored_and_goes_one_hop_only(
    two_files: tuple[Path, Path], lines: list[str]
) -> None:
    authorized, trusted = two_files
    a, b, c, d = map(blob_of, lines)
    authorized.write_text(lines[0] + "\n")
    trusted.write_text(marked(lines[1]))
    store = TrustStore([authorized], trusted)
    assert store.introduce(a, [c]) == set()  # trusted, but not marked introducer
    assert not store.knows(c)
    assert store.introduce(b, [c]) == {c}
    assert store.introduce(c, [d]) == set()  # introduced, so it introduces no one
    assert not store.is_introducer(c)
    assert not store.knows(d)


def test_introductions_end_when_the_mark_goes_or_the_introducers_line_expires(
    two_files: tuple[Path, Path], lines: list[str]
) -> None:
    authorized, trusted = two_files
    a, b = blob_of(lines[0]), blob_of(lines[1])
    trusted.write_text(marked(lines[0]))
    store = TrustStore([authorized], trusted)
    store.introduce(a, [b])
    trusted.write_text(lines[0] + "\n")  # still trusted, no longer an introducer
    assert not store.is_introducer(a)
    assert not store.is_trusted(b, "10.0.0.1")
    assert store.introduce(a, [b]) == {b}  # what it said before is forgotten
    trusted.write_text(marked(lines[0]))
    assert not store.knows(b)  # marked again: its next word counts, not its last
    end = datetime(2030, 6, 1).timestamp()
    trusted.write_text(marked(lines[0], 'expiry-time="20300601"'))
    now = [end - 1]
    store = TrustStore([authorized], trusted, lambda: now[0])
    store.introduce(a, [b])
    assert store.knows(b)
    now[0] = end + 1
    assert not store.knows(b)
    assert not store.is_introducer(a)


def test_an_introducer_neither_widens_nor_revives_what_the_users_own_lines_say(
    two_files: tuple[Path, Path], lines: list[str]
) -> None:
    authorized, trusted = two_files
    a, b, c, d = map(blob_of, lines)
    authorized.write_text(f'from="10.0.0.5" {lines[1]}\nexpiry-time="20000101" {lines[2]}\n')
    trusted.write_text(marked(lines[0]))
    store = TrustStore([authorized], trusted)
    store.introduce(a, [b, c, d])
    assert store.is_trusted(b, "10.0.0.5")
    assert not store.is_trusted(b, "10.0.0.6")
    assert not store.knows(c)
    assert store.is_trusted(d, "10.0.0.6")
    assert store.introducers_of(b) == store.introducers_of(c) == []
    assert store.introducers_of(d) == [a]


def test_a_key_is_trusted_while_any_of_its_introducers_announces_it(
    two_files: tuple[Path, Path], lines: list[str]
) -> None:
    authorized, trusted = two_files
    a, b, c = map(blob_of, lines[:3])
    trusted.write_text(marked(lines[0]) + marked(lines[1]))
    store = TrustStore([authorized], trusted)
    store.introduce(a, [c])
    store.introduce(b, [c])
    assert store.introducers_of(c) == sorted([a, b], key=NodeId.of_key)
    store.introduce(a, [])
    assert store.introducers_of(c) == [b]
    assert store.knows(c)


def test_an_announced_key_the_crypto_layer_refuses_is_not_trusted(
    two_files: tuple[Path, Path], lines: list[str]
) -> None:
    authorized, trusted = two_files
    a, b = blob_of(lines[0]), blob_of(lines[1])
    trusted.write_text(marked(lines[0]))
    store = TrustStore([authorized], trusted)
    off_curve = (b"\0\0\0\x13ecdsa-sha2-nistp256\0\0\0\x08nistp256\0\0\0\x41\x04"
                 + b"\x22" * 64)
    assert check_key(base64.b64encode(off_curve).decode()) == off_curve  # its shape is right
    assert store.introduce(a, [off_curve, b]) == {b}
    assert not store.knows(off_curve)


def test_the_wire_takes_every_key_the_crypto_layer_does(lines: list[str]) -> None:
    for line in lines:
        blob = blob_of(line)
        assert check_key(base64.b64encode(blob).decode()) == blob


def test_add_marks_an_introducer(two_files: tuple[Path, Path], lines: list[str]) -> None:
    authorized, trusted = two_files
    a, b = (parse_key_line(line) for line in lines[:2])
    assert a is not None
    assert b is not None
    authorized.write_text(lines[0] + "\n")
    store = TrustStore([authorized], trusted)
    assert store.add(a, introducer=True)  # trusted already, but not as introducer
    assert store.add(b, introducer=True)
    assert trusted.read_text() == marked(lines[0]) + marked(lines[1])
    assert store.is_introducer(a.blob)
    assert store.is_introducer(b.blob)
    assert not store.add(a, introducer=True)
    assert not store.add(b)
