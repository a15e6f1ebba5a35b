"""Passphrase-sealed files: a device's first bundle when there is no SSH channel.

A freshly paired device has no key yet, so its first bundle cannot be IBE
encrypted to it. Over the admin's SSH connection it travels as the plain
signed bundle; on a USB stick or any other copy it is sealed here, with a
passphrase the admin tells the device's user. Because the file can be
copied and attacked offline, the key comes from a memory-hard KDF (scrypt)
and the passphrase must be long: by default a generated voice-code
passphrase (``generate_passphrase``, 64 bits, with a check word that
catches a misheard word before the slow KDF runs).

The file is an ordinary envelope (``formats``), type ``PASSPHRASE_SEALED``,
no curve, seven fields::

    kdf          b"scrypt"
    kdf params   u8 log2(N), u32 r, u32 p  (9 bytes)
    salt         16 bytes
    form         b"code" (a checked voice code) or b"text" (free text)
    aead         b"chacha20-poly1305"
    nonce        12 bytes
    ciphertext   the sealed bytes and the 16-byte tag

Every header field is recorded so a later release can raise the cost
without breaking old files, and all of them are the AEAD's associated
data, so none can be changed unnoticed. The parameters are bounded on
opening, so a crafted file cannot make a small device allocate gigabytes.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from cloudlet import formats
from cloudlet.crypto import codes, curve
from cloudlet.errors import CodeFormatError, FormatError, WeakPassphrase, WrongPassphrase
from cloudlet.formats import Kind

__all__ = [
    "DEFAULT_KDF",
    "KdfParams",
    "MIN_CODE_BITS",
    "MIN_TEXT_CHARS",
    "describe",
    "generate_passphrase",
    "is_sealed",
    "open_sealed",
    "seal",
]

_LABEL = b"CLOUDLET-V01-PASSPHRASE-SEALED"
_KDF = b"scrypt"
_AEAD = b"chacha20-poly1305"
_FORMS = (b"code", b"text")
_PARAMS = struct.Struct(">BII")
SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
MIN_CODE_BITS = 48
MIN_TEXT_CHARS = 12
_SEPARATORS = re.compile(r"[\s\-_.,;:/|+]+")


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost: N = 2**log2_n, memory about 128 * r * N bytes.

    The bounds keep the cost meaningful (at least 16 MiB) and the memory
    within what a small device has (at most 512 MiB).
    """

    log2_n: int = 17
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        for name in ("log2_n", "r", "p"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int")
        if not (14 <= self.log2_n <= 22 and 1 <= self.r <= 32 and 1 <= self.p <= 4):
            raise FormatError(
                f"scrypt parameters N=2^{self.log2_n}, r={self.r}, p={self.p} are out of range "
                "(N 2^14..2^22, r 1..32, p 1..4)."
            )
        if not 16 << 20 <= self.memory_bytes <= 512 << 20:
            raise FormatError(
                f"scrypt parameters need {self.memory_bytes >> 20} MiB; between 16 and 512 "
                "MiB are accepted."
            )

    @property
    def memory_bytes(self) -> int:
        return 128 * self.r * (1 << self.log2_n)

    def encode(self) -> bytes:
        return _PARAMS.pack(self.log2_n, self.r, self.p)

    @classmethod
    def decode(cls, raw: bytes) -> KdfParams:
        return cls(*_PARAMS.unpack(raw))


DEFAULT_KDF = KdfParams()


def generate_passphrase(bits: int = 64, rng: curve.Rng | None = None) -> str:
    """A voice-code passphrase: easy to read out, typo-checked, ``bits`` strong."""
    if bits < MIN_CODE_BITS:
        raise ValueError(f"a sealing passphrase needs at least {MIN_CODE_BITS} bits")
    return str(codes.generate_code(bits, rng))


def _text_secret(passphrase: str) -> bytes:
    """NFC, case folded, separators unified: what a person types, made canonical."""
    norm = unicodedata.normalize("NFC", passphrase).casefold().strip()
    return "-".join(t for t in _SEPARATORS.split(norm) if t).encode("utf-8")


def _secret(passphrase: str, form: bytes) -> bytes:
    if not isinstance(passphrase, str):
        raise TypeError("passphrase must be a str")
    if form == b"code":
        return codes.parse_code(passphrase).secret()
    return _text_secret(passphrase)


def _choose_form(passphrase: str) -> bytes:
    """A passphrase that parses as a voice code is sealed as one, else as text."""
    try:
        code = codes.parse_code(passphrase)
    except CodeFormatError:
        code = None
    if code is not None:
        if code.entropy_bits < MIN_CODE_BITS:
            raise WeakPassphrase(
                f"That voice code carries {code.entropy_bits:.0f} bits; a sealed file needs "
                f"at least {MIN_CODE_BITS}."
            )
        return b"code"
    if len(_text_secret(passphrase).decode("utf-8")) < MIN_TEXT_CHARS:
        raise WeakPassphrase(f"A sealing passphrase needs at least {MIN_TEXT_CHARS} characters.")
    return b"text"


def _aad(fields: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in (_LABEL, *fields))


def _key(secret: bytes, salt: bytes, params: KdfParams) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=1 << params.log2_n, r=params.r, p=params.p)
    return kdf.derive(secret)


def seal(
    data: bytes,
    passphrase: str,
    params: KdfParams = DEFAULT_KDF,
    rng: curve.Rng | None = None,
) -> bytes:
    """Seal ``data`` (a whole object, e.g. a signed bundle) under ``passphrase``."""
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    if not isinstance(params, KdfParams):
        raise TypeError("params must be KdfParams")
    form = _choose_form(passphrase)
    rng = rng or curve.default_rng
    salt, nonce = rng(SALT_BYTES), rng(NONCE_BYTES)
    header = [_KDF, params.encode(), salt, form, _AEAD, nonce]
    key = _key(_secret(passphrase, form), salt, params)
    body = ChaCha20Poly1305(key).encrypt(nonce, data, _aad(header))
    return formats.pack(Kind.PASSPHRASE_SEALED, [*header, body], formats.CURVE_NONE)


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` claims to be a passphrase-sealed file (nothing checked yet)."""
    try:
        return formats.peek_kind(data) == Kind.PASSPHRASE_SEALED
    except FormatError:
        return False


@dataclass(frozen=True)
class _Parsed:
    header: list[bytes]
    params: KdfParams
    salt: bytes
    form: bytes
    nonce: bytes
    body: bytes


def _parse(data: bytes) -> _Parsed:
    kdf, raw_params, salt, form, aead, nonce, body = formats.unpack(
        data,
        Kind.PASSPHRASE_SEALED,
        [None, _PARAMS.size, SALT_BYTES, None, None, NONCE_BYTES, None],
        formats.CURVE_NONE,
    )
    if kdf != _KDF or aead != _AEAD:
        raise FormatError(
            f"The sealed file uses {kdf[:32]!r} and {aead[:32]!r}; this release reads "
            f"{_KDF.decode()} with {_AEAD.decode()}."
        )
    if form not in _FORMS:
        raise FormatError(f"Unknown passphrase form {form[:16]!r} in the sealed file.")
    if len(body) < TAG_BYTES:
        raise FormatError("The sealed file is truncated (shorter than its tag).")
    params = KdfParams.decode(raw_params)
    return _Parsed([kdf, raw_params, salt, form, aead, nonce], params, salt, form, nonce, body)


def describe(data: bytes) -> KdfParams:
    """The KDF cost of a sealed file, so a caller can say how long opening takes."""
    return _parse(data).params


def open_sealed(data: bytes, passphrase: str) -> bytes:
    """The sealed bytes, or FormatError (damaged) or WrongPassphrase.

    A voice-code passphrase is checked (its check word) before the KDF runs,
    so a misheard word gets a precise message at once.
    """
    parsed = _parse(data)
    try:
        secret = _secret(passphrase, parsed.form)
    except CodeFormatError as exc:
        raise WrongPassphrase(
            f"The passphrase is not right: {exc.message}",
            "Nothing was opened. Check the passphrase word by word with the cloudlet admin "
            "(the last word is a check word, so one misheard word is caught here).",
        ) from None
    key = _key(secret, parsed.salt, parsed.params)
    try:
        return ChaCha20Poly1305(key).decrypt(parsed.nonce, parsed.body, _aad(parsed.header))
    except InvalidTag:
        raise WrongPassphrase(
            "The passphrase does not open this file (or the file was altered)."
        ) from None
