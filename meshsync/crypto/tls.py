"""TLS bound to the SSH identity: a certificate whose key the node's SSH key vouches for.

The certificate carries, in an extension of its own, an SSHSIG (namespace `meshsync`) by the
node's SSH key over the SHA-256 of the certificate's public key. A client that reads the
certificate after the handshake (the handshake proved the server holds that TLS key) learns
which SSH key stands behind the connection before it sends a byte of its request; a man in
the middle that terminates TLS with a key of its own cannot produce that signature. This is
libp2p's TLS handshake, with SSHSIG in place of its signed key extension, and it works for
every SSH key type and for keys held in ssh-agent (one signature when the certificate is made).
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import NameOID

from meshsync.core.wire import is_node_name
from meshsync.crypto import sshsig
from meshsync.crypto.keys import Signer, load_public_blob, replace_private

# A UUID-derived OID (ITU-T X.667): ours without registering anything.
VOUCH_OID = x509.ObjectIdentifier("2.25.106626129328020432357101602168182838693")
_VOUCH_PREFIX = b"meshsync-tls-v1\n"
MAX_CERTIFICATE = 16 * 1024
CERTIFICATE_FILE = "tls.pem"


class NotVouched(ValueError):
    """A TLS certificate that no SSH key vouches for (or that is not a certificate at all)."""


def vouch_message(spki_der: bytes) -> bytes:
    """What the SSH key signs: the SHA-256 of the certificate's SubjectPublicKeyInfo."""
    return _VOUCH_PREFIX + hashlib.sha256(spki_der).digest()


def make_certificate(signer: Signer, name: str = "meshsync") -> bytes:
    """A new TLS key and a self-signed certificate vouched for by `signer`, as one PEM; its
    subject is the node's `name` (what a node that connects is told, inside TLS 1.3)."""
    key = Ed25519PrivateKey.generate()
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    vouch = sshsig.sign(signer, vouch_message(spki))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        # Validity is not what binds this certificate (nobody checks it against a CA): the
        # vouch is. A fixed far end keeps a node's certificate from expiring under it.
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC))
        .add_extension(x509.UnrecognizedExtension(VOUCH_OID, vouch), critical=False)
        .sign(key, None)
    )
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return private + certificate.public_bytes(Encoding.PEM)


def vouched_key(der: bytes) -> bytes:
    """The SSH public key blob that vouches for this DER certificate; NotVouched if none does."""
    if len(der) > MAX_CERTIFICATE:
        raise NotVouched("certificate is too large")
    try:
        certificate = x509.load_der_x509_certificate(der)
        vouch = certificate.extensions.get_extension_for_oid(VOUCH_OID).value
        spki = certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except x509.ExtensionNotFound:
        raise NotVouched("certificate carries no SSH key's vouch") from None
    except Exception as e:  # the parser's errors share no base (ValueError, InvalidVersion,
        # UnsupportedAlgorithm…), and none may escape for a certificate a peer chose
        raise NotVouched(f"not a usable certificate: {e}") from None
    if not isinstance(vouch, x509.UnrecognizedExtension):
        raise NotVouched("certificate's vouch is malformed")
    try:
        return load_public_blob(sshsig.verify(vouch.value, vouch_message(spki)))
    except ValueError as e:  # BadSignature is a ValueError, as is an unusable key
        raise NotVouched(f"certificate's vouch does not verify: {e}") from None


def claimed_name(der: bytes) -> str | None:
    """The name a vouched certificate's subject gives, if it is one a hello could carry (1 to
    64 printable characters); None if not. Claimed by the key that vouches for it, no more."""
    try:
        found = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME)
    except Exception:  # as in vouched_key: none of a peer's certificate's errors may escape
        return None
    name = found[0].value if len(found) == 1 else None
    return name if is_node_name(name) else None


def certificate_file(state: Path, signer: Signer, name: str = "meshsync") -> Path:
    """The node's TLS key and certificate (0600 in the state directory), made when missing,
    when they were made for another SSH key, or for another name."""
    path = state / CERTIFICATE_FILE
    try:
        pem = path.read_bytes()
        der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
        if vouched_key(der) == signer.public_blob and claimed_name(der) == name:
            return path
    except (OSError, ValueError):
        pass  # missing, damaged or another key's: make a new one
    replace_private(path, make_certificate(signer, name))
    return path
