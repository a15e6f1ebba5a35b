"""Signed manifests of installed files, checked at delivery (threat 4: altered software).

Why: between the setup ceremony and the hand-over to the field unit, somebody
could change the software on a cloudlet. At setup the installed trees (the
venv, configuration, images) are scanned into a manifest, which the admin's
control laptop signs with an Ed25519 key that never leaves it. At delivery the
cloudlet is scanned again and compared against the manifest, after the
manifest's own signature has been checked against the public key the admin
trusts. Every difference is named, file by file, so the admin knows what to
reinstall.

The encoding is canonical JSON (sorted keys, no spaces, ASCII), with a format
name and a version; anything else (unknown version, extra fields, reformatted
text) is refused, so a signature covers exactly one meaning. The signature
covers every field except itself.

Each entry records type (file, dir, symlink), permission bits (with
setuid/setgid/sticky), owner and group names, and for files size and SHA-256,
for symlinks the target. Symlinks are never followed.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloudlet.digests import sha256_file
from cloudlet.errors import CloudletError, CryptoError, FormatError, StorageError
from cloudlet.formats import write_secret_file

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckReport",
    "DeliveryCheckError",
    "Entry",
    "Manifest",
    "check_delivery",
    "compare",
    "fingerprint",
    "generate_signing_key",
    "load_public_key",
    "load_signing_key",
    "scan",
    "sign",
    "verify_manifest",
]

FORMAT = "cloudlet-manifest"
VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_SIG_TAG = b"cloudlet-manifest-signature-v1\x00"
_TYPES = ("file", "dir", "symlink")
_COMMON = {"path": str, "type": str, "mode": int, "owner": str, "group": str}
_EXTRA = {"file": {"size": int, "sha256": str}, "dir": {}, "symlink": {"target": str}}
_MAX_LISTED = 20


class DeliveryCheckError(CloudletError):
    """The files on the cloudlet differ from its signed manifest."""

    default_hint = (
        "Do not hand this cloudlet over. Reinstall the named files from the offline "
        "wheelhouse (re-run the setup ceremony), then run the delivery ceremony again; "
        "if you did not expect any change, treat the cloudlet as tampered with."
    )

    def __init__(self, message: str, report: CheckReport, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.report = report


# --- model ----------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Entry:
    """One path under a root, as it was (or is) on disk."""

    path: str
    type: str
    mode: int
    owner: str
    group: str
    size: int | None = None
    sha256: str | None = None
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in _COMMON}
        out.update({k: getattr(self, k) for k in _EXTRA[self.type]})
        return out

    def differences(self, now: Entry) -> list[str]:
        """How ``now`` differs from this recorded entry, in operator words."""
        out = []
        if self.type != now.type:
            return [f"type {self.type} -> {now.type}"]
        if self.sha256 != now.sha256:
            out.append(f"sha256 {self.sha256} -> {now.sha256}")
        if self.size != now.size:
            out.append(f"size {self.size} -> {now.size}")
        if self.target != now.target:
            out.append(f"target {self.target} -> {now.target}")
        if self.mode != now.mode:
            out.append(f"mode {self.mode:04o} -> {now.mode:04o}")
        if self.owner != now.owner or self.group != now.group:
            out.append(f"owner {self.owner}:{self.group} -> {now.owner}:{now.group}")
        return out


@dataclass(frozen=True)
class Manifest:
    """What should be installed: the roots scanned, what was left out, every entry."""

    roots: tuple[str, ...]
    entries: tuple[Entry, ...]
    created: str
    exclude: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "roots": list(self.roots),
            "exclude": list(self.exclude),
            "files": [e.to_json() for e in self.entries],
        }


@dataclass(frozen=True)
class CheckReport:
    """The differences between a manifest and the disk; empty lists mean all is well."""

    changed: list[tuple[str, list[str]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.unexpected)

    def problems(self) -> list[str]:
        """One line per file, sorted by path, e.g. '/opt/x.py changed (sha256 a -> b)'."""
        lines = [(p, f"{p} changed ({'; '.join(d)})") for p, d in self.changed]
        lines += [(p, f"{p} missing") for p in self.missing]
        lines += [(p, f"{p} unexpected (not in the manifest)") for p in self.unexpected]
        return [text for _path, text in sorted(lines)]


# --- scanning ---------------------------------------------------------------------------


def _name(lookup: Callable[[int], Any], ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def _entry(path: str) -> Entry:
    st = os.lstat(path)
    common = dict(
        path=path,
        mode=stat.S_IMODE(st.st_mode),
        owner=_name(pwd.getpwuid, st.st_uid),
        group=_name(grp.getgrgid, st.st_gid),
    )
    if stat.S_ISREG(st.st_mode):
        digest = sha256_file(path, follow_symlinks=False)
        return Entry(type="file", size=st.st_size, sha256=digest, **common)
    if stat.S_ISDIR(st.st_mode):
        return Entry(type="dir", **common)
    if stat.S_ISLNK(st.st_mode):
        return Entry(type="symlink", target=os.readlink(path), **common)
    raise StorageError(
        f"{path} is a device, socket or pipe, which a manifest cannot cover.",
        "Remove it from the tree, or exclude it explicitly if it belongs there.",
    )


def _excluded(path: str, exclude: Iterable[str]) -> bool:
    return any(fnmatch(path, pattern) for pattern in exclude)


def _walk(roots: Iterable[str], exclude: tuple[str, ...]) -> Iterator[Entry]:
    for root in roots:
        if not os.path.lexists(root):
            continue  # scan() refuses this; compare() reports everything under it as missing
        yield _entry(root)
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            continue
        for top, dirs, files in os.walk(root, followlinks=False, onerror=_raise):
            dirs[:] = sorted(d for d in dirs if not _excluded(os.path.join(top, d), exclude))
            for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(top, d))]):
                path = os.path.join(top, name)
                if not _excluded(path, exclude):
                    yield _entry(path)
            for d in dirs:
                path = os.path.join(top, d)
                if not os.path.islink(path):
                    yield _entry(path)


def _raise(exc: OSError) -> None:
    raise StorageError(f"Cannot read {exc.filename}: {exc.strerror}.") from exc


def _normalise_roots(roots: Iterable[str | os.PathLike]) -> tuple[str, ...]:
    out = []
    for root in roots:
        text = os.path.normpath(os.fspath(root))
        if not os.path.isabs(text):
            raise ValueError(f"manifest roots must be absolute paths, not {text!r}")
        out.append(text)
    if not out:
        raise ValueError("a manifest needs at least one root")
    return tuple(sorted(set(out)))


def _on_disk(roots: tuple[str, ...], exclude: tuple[str, ...]) -> dict[str, Entry]:
    try:
        return {e.path: e for e in _walk(roots, exclude)}
    except OSError as exc:
        raise StorageError(f"Cannot read {exc.filename}: {exc.strerror}.") from exc


def scan(
    roots: Iterable[str | os.PathLike],
    exclude: Iterable[str] = (),
    now: datetime | None = None,
) -> Manifest:
    """Record every file, directory and symlink under ``roots`` (absolute paths).

    ``exclude`` holds fnmatch patterns on absolute paths; they are stored in the
    manifest (and so signed), so the check at delivery leaves out exactly the
    same paths. Excluding ``*.pyc`` is a hole: Python runs a cached file whose
    header matches the source, so compile them at install time instead.
    """
    norm = _normalise_roots(roots)
    patterns = tuple(exclude)
    absent = [root for root in norm if not os.path.lexists(root)]
    if absent:
        raise StorageError(
            f"Cannot build a manifest: {', '.join(absent)} does not exist.",
            "Check the installation finished, and the roots given to the manifest.",
        )
    found = _on_disk(norm, patterns)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Manifest(norm, tuple(sorted(found.values())), stamp, patterns)


def compare(manifest: Manifest) -> CheckReport:
    """Scan the disk again and list what changed, vanished or appeared, by name."""
    now = _on_disk(manifest.roots, manifest.exclude)
    report = CheckReport()
    recorded = {e.path: e for e in manifest.entries}
    for path, was in sorted(recorded.items()):
        cur = now.get(path)
        if cur is None:
            report.missing.append(path)
        elif diffs := was.differences(cur):
            report.changed.append((path, diffs))
    report.unexpected.extend(sorted(p for p in now if p not in recorded))
    return report


# --- encoding and signatures ----------------------------------------------------------------


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _signed_part(body: dict[str, Any]) -> bytes:
    return _SIG_TAG + _canonical({"format": FORMAT, "v": VERSION, "body": body})


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, in hex: what admins compare by eye."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign(manifest: Manifest, private_key: Ed25519PrivateKey) -> bytes:
    """The signed manifest file: canonical JSON plus a newline."""
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError("private_key must be an Ed25519PrivateKey")
    body = manifest.body()
    signature = {
        "alg": "ed25519",
        "key": fingerprint(private_key.public_key()),
        "sig": private_key.sign(_signed_part(body)).hex(),
    }
    doc = {"format": FORMAT, "v": VERSION, "body": body, "signature": signature}
    return _canonical(doc) + b"\n"


def _exact(obj: Any, keys: dict[str, type], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != set(keys):
        raise FormatError(f"The manifest's {what} has missing or unknown fields.")
    for k, typ in keys.items():
        if not isinstance(obj[k], typ) or (typ is int and isinstance(obj[k], bool)):
            raise FormatError(f"The manifest's {what} field {k!r} has the wrong type.")
    return obj


def _parse_entry(obj: Any) -> Entry:
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind not in _TYPES:
        raise FormatError(f"The manifest has an entry of unknown type {kind!r}.")
    data = _exact(obj, {**_COMMON, **_EXTRA[kind]}, "file entry")
    if kind == "file" and (len(data["sha256"]) != 64 or data["size"] < 0):
        raise FormatError(f"The manifest entry for {data['path']} is malformed.")
    return Entry(**data)


def _parse_body(body: Any) -> Manifest:
    data = _exact(body, {"created": str, "roots": list, "exclude": list, "files": list}, "body")
    if not all(isinstance(x, str) for x in data["roots"] + data["exclude"]):
        raise FormatError("The manifest's roots and exclusions must be text.")
    entries = tuple(_parse_entry(e) for e in data["files"])
    if list(entries) != sorted(entries) or len({e.path for e in entries}) != len(entries):
        raise FormatError("The manifest's entries are not sorted or not unique.")
    return Manifest(tuple(data["roots"]), entries, data["created"], tuple(data["exclude"]))


def verify_manifest(data: bytes, public_key: Ed25519PublicKey) -> Manifest:
    """Check version, canonical form and signature, then decode; never trusts before that."""
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError("The manifest is larger than any manifest this release writes.")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise FormatError("The manifest is not valid JSON.") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FormatError("This is not a cloudlet manifest.")
    if doc.get("v") != VERSION:
        raise FormatError(
            f"Manifest version {doc.get('v')!r} is not supported (this release reads {VERSION})."
        )
    doc = _exact(doc, {"format": str, "v": int, "body": dict, "signature": dict}, "envelope")
    if _canonical(doc) + b"\n" != data:
        raise FormatError("The manifest is not in canonical form (was it edited or reformatted?).")
    sig = _exact(doc["signature"], {"alg": str, "key": str, "sig": str}, "signature")
    expected = fingerprint(public_key)
    if sig["alg"] != "ed25519":
        raise CryptoError(f"The manifest is signed with {sig['alg']!r}, not ed25519.")
    if sig["key"] != expected:
        raise CryptoError(
            f"The manifest was signed by key {sig['key'][:16]}..., not by the trusted "
            f"key {expected[:16]}....",
            "Use the public key of the control laptop that ran the setup ceremony.",
        )
    try:
        public_key.verify(bytes.fromhex(sig["sig"]), _signed_part(doc["body"]))
    except (InvalidSignature, ValueError):
        raise CryptoError(
            "The manifest's signature does not match its content: it was altered.",
            "Take the manifest again from the control laptop; do not deliver this cloudlet "
            "until it verifies.",
        ) from None
    return _parse_body(doc["body"])


def check_delivery(data: bytes, public_key: Ed25519PublicKey) -> Manifest:
    """Verify the signed manifest, then the disk; raises DeliveryCheckError naming each file."""
    manifest = verify_manifest(data, public_key)
    report = compare(manifest)
    if not report.ok:
        problems = report.problems()
        shown = "; ".join(problems[:_MAX_LISTED])
        more = len(problems) - _MAX_LISTED
        tail = f"; and {more} more" if more > 0 else ""
        raise DeliveryCheckError(f"Delivery check failed: {shown}{tail}.", report)
    return manifest


# --- keys -----------------------------------------------------------------------------------


def generate_signing_key(
    private_path: str | os.PathLike, public_path: str | os.PathLike | None = None
) -> Ed25519PublicKey:
    """Create the control side's signing key (0600) and, if asked, its public key (0644)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret_file(private_path, pem)
    public = key.public_key()
    if public_path is not None:
        spki = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        write_secret_file(public_path, spki, mode=0o644)
    return public


def _read(path: str | os.PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StorageError(f"Cannot read the {what} {path}: {exc.strerror}.") from None


def load_signing_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    """Load the private key; refuses a key file that other users can read."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise StorageError(f"Cannot read the signing key {path}: {exc.strerror}.") from None
    if mode & 0o077:
        raise StorageError(
            f"The manifest signing key {path} is accessible to other users (mode {mode:04o}).",
            f"Run `chmod 600 {path}`; if others may have copied it, make a new key and "
            "sign the manifests again.",
        )
    try:
        key = serialization.load_pem_private_key(_read(path, "signing key"), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise FormatError(f"{path} is not an Ed25519 private key in PEM form.")
    return key


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read(path, "public key"))
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise FormatError(f"{path} is not an Ed25519 public key in PEM form.")
    return key


# --- what the Ansible module drives ---------------------------------------------------------


def from_body(body: Any) -> Manifest:
    """A manifest from the body a scan returned (e.g. through Ansible), strictly parsed."""
    return _parse_body(body)


def signed_copy_matches(
    manifest: Manifest, public_key: Ed25519PublicKey, dest: str | os.PathLike
) -> bool:
    """Whether ``dest`` holds a valid signature over the same files (scan time aside)."""
    try:
        current = verify_manifest(Path(dest).read_bytes(), public_key)
    except (OSError, CloudletError):
        return False
    return (current.roots, current.exclude, current.entries) == (
        manifest.roots, manifest.exclude, manifest.entries
    )


def ensure_signed(
    manifest: Manifest, private_key: Ed25519PrivateKey, dest: str | os.PathLike
) -> bool:
    """Sign ``manifest`` into ``dest`` unless it already holds the same files; True if written.

    The scan time alone does not count as a change, so a second setup run that
    finds the same files leaves the signed manifest (and its digest) alone.
    """
    if signed_copy_matches(manifest, private_key.public_key(), dest):
        return False
    write_secret_file(dest, sign(manifest, private_key), mode=0o644)
    return True
