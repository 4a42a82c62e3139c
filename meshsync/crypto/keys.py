"""SSH keys: loading the local signing key, public key encodings and signature checks."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import socket
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)
from nacl.bindings import (
    crypto_sign,
    crypto_sign_BYTES,
    crypto_sign_open,
    crypto_sign_seed_keypair,
)
from nacl.exceptions import CryptoError

from meshsync.crypto.agent import AgentError, AgentSigner, list_identities
from meshsync.crypto.sshwire import Reader, put_mpint, put_string

SSHPrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey | RSAPrivateKey
SSHPublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey | RSAPublicKey

# cryptography curve name -> (SSH key/signature type, hash the SSH ECDSA profile mandates)
_EC: dict[str, tuple[bytes, hashes.HashAlgorithm]] = {
    "secp256r1": (b"ecdsa-sha2-nistp256", hashes.SHA256()),
    "secp384r1": (b"ecdsa-sha2-nistp384", hashes.SHA384()),
    "secp521r1": (b"ecdsa-sha2-nistp521", hashes.SHA512()),
}
KEY_TYPES = frozenset({"ssh-ed25519", "ssh-rsa", *(t.decode() for t, _ in _EC.values())})
# Signature algorithm -> the only key type it may come from; "ssh-rsa" (SHA-1) is absent.
_SIG_KEY_TYPE = {
    b"ssh-ed25519": b"ssh-ed25519",
    b"rsa-sha2-256": b"ssh-rsa",
    b"rsa-sha2-512": b"ssh-rsa",
    **{t: t for t, _ in _EC.values()},
}
_RSA_HASH = {b"rsa-sha2-256": hashes.SHA256(), b"rsa-sha2-512": hashes.SHA512()}
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
MAX_RSA_EXPONENT = 2**32


class KeyLoadError(Exception):
    """The signing key cannot be used; the message tells the user how to fix it."""


class Signer(Protocol):
    """Something that holds a private key and makes SSH signature blobs with it."""

    @property
    def public_blob(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


def _blob_of(key: SSHPublicKey) -> bytes:
    return base64.b64decode(key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).split()[1])


class KeySigner:
    """Signer over a private key held in memory."""

    __slots__ = ("_ed25519", "_key", "fast", "public_blob")

    def __init__(self, key: SSHPrivateKey) -> None:
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in _EC:
            raise KeyLoadError(f"unsupported ECDSA curve {key.curve.name}")
        self._key = key
        self.public_blob = _blob_of(key.public_key())
        self.fast = not isinstance(key, RSAPrivateKey)  # RSA-3072 signs in 0.9 ms, the others in µs
        # Ed25519 signs every record a node makes: libsodium's signing (PyNaCl, which already
        # checks signatures here) takes two thirds of the time of cryptography's.
        self._ed25519 = b""
        if isinstance(key, Ed25519PrivateKey):
            seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            self._ed25519 = crypto_sign_seed_keypair(seed)[1]

    def sign(self, data: bytes) -> bytes:
        """Return an SSH signature blob (string algorithm || string signature) over data."""
        key = self._key
        if isinstance(key, Ed25519PrivateKey):
            signed = crypto_sign(data, self._ed25519)  # the signature, then the message
            return put_string(b"ssh-ed25519") + put_string(signed[:crypto_sign_BYTES])
        if isinstance(key, ec.EllipticCurvePrivateKey):
            name, digest = _EC[key.curve.name]
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
            return put_string(name) + put_string(put_mpint(r) + put_mpint(s))
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA512())
        return put_string(b"rsa-sha2-512") + put_string(sig)


def load_signer(path: Path, agent_socket: str | None) -> Signer:
    """Load the private key at path, or its ssh-agent copy if it is passphrase-protected."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyLoadError(f"cannot read key {path}: {e.strerror}") from e
    key: PrivateKeyTypes
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = load_ssh_private_key(data, None)
        else:
            key = load_pem_private_key(data, None)
    except TypeError:  # cryptography's way of saying "needs a password"; we never prompt
        return _agent_signer(path, agent_socket)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyLoadError(f"{path} is not a usable private key: {e}") from e
    if not isinstance(key, SSHPrivateKey):
        raise KeyLoadError(f"{path} holds a {type(key).__name__}; use ed25519, ecdsa or rsa")
    return KeySigner(key)


def _agent_signer(path: Path, agent_socket: str | None) -> AgentSigner:
    fix = f"run `ssh-add {path}` or pass --key"
    pub = path.with_name(path.name + ".pub")
    try:
        blob = load_public_blob(pub.read_text())
    except (OSError, ValueError) as e:
        raise KeyLoadError(f"key {path} is passphrase-protected and {pub} is unusable ({e})") from e
    try:
        held = list_identities(agent_socket) if agent_socket else []
    except AgentError as e:
        raise KeyLoadError(f"key {path} is passphrase-protected and {e}: {fix}") from e
    if not agent_socket or blob not in held:
        raise KeyLoadError(f"key {path} is passphrase-protected and no ssh-agent holds it: {fix}")
    return AgentSigner(agent_socket, blob)


def find_key(explicit: Path | None, ssh_dir: Path, state_dir: Path) -> Path:
    """Pick the signing key: explicit, else the user's SSH key, else our own (made on demand)."""
    if explicit is not None:
        if not explicit.is_file():
            raise KeyLoadError(f"key file {explicit} does not exist")
        return explicit
    for name in DEFAULT_KEYS:
        if (ssh_dir / name).is_file():
            return ssh_dir / name
    return own_key(state_dir)


def own_key(state_dir: Path) -> Path:
    """meshsync's own key in the state directory, unencrypted (0600), made the first time: for
    a user without an SSH key, and for a service, which no ssh-agent serves."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / "key"
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
        # O_EXCL with mode 0600 so the secret is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        line = public_key_line(_blob_of(key.public_key()), f"meshsync@{socket.gethostname()}")
        path.with_name("key.pub").write_text(line + "\n")
    return path


def replace_private(path: Path, data: bytes) -> None:
    """Replace the file at `path` whole, in one rename (a reader never sees it half written),
    0600 from its first byte; the temporary file goes if anything fails."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def public_key_line(blob: bytes, comment: str = "") -> str:
    """Render blob as an OpenSSH public key line: "type base64 [comment]"."""
    line = f"{Reader(blob).string().decode('ascii')} {base64.b64encode(blob).decode()}"
    return f"{line} {comment}" if comment else line


def fingerprint(blob: bytes) -> str:
    """Return the SHA256 fingerprint exactly as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@lru_cache(maxsize=64)  # the mesh's few keys verify every record: parse each once
def _public_key(blob: bytes) -> SSHPublicKey:
    key_type = Reader(blob).string()
    if key_type.decode("ascii", "replace") not in KEY_TYPES:
        raise ValueError(f"unsupported key type {key_type!r}")
    try:
        key = load_ssh_public_key(key_type + b" " + base64.b64encode(blob))
    except ValueError:
        raise
    except Exception as e:  # UnsupportedAlgorithm, or what some releases let escape (an
        # empty ECDSA point is an IndexError in cryptography 45): none may, for a peer's key
        raise ValueError(f"unusable {key_type.decode()} key: {e}") from e
    if isinstance(key, ec.EllipticCurvePublicKey):
        if _EC.get(key.curve.name, (b"",))[0] != key_type:
            raise ValueError(f"{key_type!r} key on curve {key.curve.name}")
    elif isinstance(key, RSAPublicKey):
        if not 1024 <= key.key_size <= 16384:  # OpenSSH's own limits
            raise ValueError(f"{key.key_size}-bit RSA key")
        if key.public_numbers().e > MAX_RSA_EXPONENT:
            # Verifying costs as many bits as the exponent has: a crafted key would make a
            # stranger's every request cost milliseconds. ssh-keygen makes 65537.
            raise ValueError("RSA key with an exponent over 2**32")
    elif not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"unsupported key {type(key).__name__}")
    # One key, one blob: a node's ID is the blob's hash, as `ssh-keygen -l` prints it, and an
    # RSA number with a leading zero byte would otherwise give the same key another ID.
    if _blob_of(key) != blob:
        raise ValueError(f"{key_type.decode()} key is not in its canonical encoding")
    return key


def parse_public_line(line: str) -> tuple[bytes, str]:
    """Parse "type base64 [comment]" into (blob, comment); ValueError if not a valid key."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise ValueError("not an ed25519, ecdsa or rsa public key line")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError as e:
        raise ValueError(f"bad base64 in public key: {e}") from e
    if Reader(blob).string() != parts[0].encode():
        raise ValueError("key type in the line does not match the key itself")
    _public_key(blob)
    return blob, parts[2] if len(parts) > 2 else ""


def load_public_blob(line_or_blob: str | bytes) -> bytes:
    """Return the validated key blob of a public key line (str) or raw blob (bytes)."""
    if isinstance(line_or_blob, str):
        return parse_public_line(line_or_blob)[0]
    _public_key(line_or_blob)
    return line_or_blob


def verify_signature(public_blob: bytes, data: bytes, signature_blob: bytes) -> bool:
    """True iff signature_blob is a valid SSH signature over data by public_blob; never raises."""
    try:
        r = Reader(signature_blob)
        algorithm, sig = r.string(), r.string()
        key = _public_key(public_blob)
        if not r.done() or _SIG_KEY_TYPE.get(algorithm) != Reader(public_blob).string():
            return False
        if isinstance(key, Ed25519PublicKey):
            # libsodium checks an Ed25519 signature about 5 times as fast as the OpenSSL that
            # cryptography bundles, and every record a peer sends is checked.
            if len(sig) != crypto_sign_BYTES:  # else sig + data would split elsewhere
                return False
            crypto_sign_open(sig + data, key.public_bytes(Encoding.Raw, PublicFormat.Raw))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            rs = Reader(sig)
            r_, s_ = rs.mpint(), rs.mpint()
            if not rs.done():
                return False
            key.verify(encode_dss_signature(r_, s_), data, ec.ECDSA(_EC[key.curve.name][1]))
        else:
            # OpenSSH accepts signatures whose leading zero bytes were stripped; so do we.
            sig = sig.rjust((key.key_size + 7) // 8, b"\0")
            key.verify(sig, data, padding.PKCS1v15(), _RSA_HASH[algorithm])
    except (ValueError, TypeError, InvalidSignature, CryptoError):
        return False
    return True
