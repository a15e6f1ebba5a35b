"""Identity strings for IBE keys: who the key is for, and when it is valid.

As in 3GPP MIKEY-SAKKE, the validity period is part of the identity itself,
so a device key stops working on its own when its period ends: nobody has to
reach the device to revoke it, and the cloudlet simply stops accepting (and
stops encrypting to) identities of past periods.

The canonical form is plain ASCII with fields that cannot contain the
separator, so two different identities can never encode to the same string::

    cloudlet-id-v1/<cloudlet id>/<device id or ->/<period>
    cloudlet-id-v1/cl-alpha/tablet-07/2026-11
    cloudlet-id-v1/cl-alpha/tablet-07@cl-bravo/2026-11  (a visitor from cl-bravo)
    cloudlet-id-v1/cl-alpha/-/2026-11-26        (the cloudlet itself, one day)

A device's *home* is the cloudlet that paired it. When a device follows its
SVM to another cloudlet, the new cloudlet issues it a key for
``<device>@<home>``: a device id is only unique at its home, so without the
home a visitor ``tablet-07`` and the new cloudlet's own ``tablet-07`` would
get the same key. The home is written only when it differs from the issuing
cloudlet, so every identity has exactly one spelling.

Ids are DNS labels (lowercase letters, digits, inner hyphens, 1..63 chars);
periods are a calendar month ``YYYY-MM`` or a day ``YYYY-MM-DD``, in UTC.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cloudlet.errors import ExpiredIdentityError, IdentityError

__all__ = [
    "DEFAULT_SKEW",
    "IDENTITY_PREFIX",
    "Identity",
    "Period",
    "check_current",
    "cloudlet_identity",
    "device_identity",
    "normalise_id",
]

IDENTITY_PREFIX = "cloudlet-id-v1"
DEFAULT_SKEW = timedelta(minutes=5)

_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
# [0-9], not \d: \d also matches other scripts' digits ("٢٠٢٦-١١"), which
# would give one period two spellings and a non-ASCII identity.
_MONTH_RE = re.compile(r"([0-9]{4})-([0-9]{2})\Z")
_DAY_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})\Z")


def normalise_id(text: str, what: str = "id") -> str:
    """NFC, strip, lowercase; then it must be a DNS label."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str")
    value = unicodedata.normalize("NFC", text).strip().lower()
    if not value.isascii() or not _ID_RE.match(value):
        raise IdentityError(
            f"{what} {text!r} is not valid.",
            "Use 1-63 lowercase letters, digits and inner hyphens (like a host name).",
        )
    return value


def _utc(when: datetime | None) -> datetime:
    if when is None:
        return datetime.now(UTC)
    if not isinstance(when, datetime):
        raise TypeError("expected a datetime")
    if when.tzinfo is None:
        raise ValueError("naive datetime: pass an aware (UTC) time")
    return when.astimezone(UTC)


@dataclass(frozen=True)
class Period:
    """A validity period: one UTC calendar month or one UTC day."""

    label: str

    def __post_init__(self) -> None:
        if not isinstance(self.label, str):
            raise TypeError("period label must be a str")
        self._bounds()  # validates

    def _bounds(self) -> tuple[datetime, datetime]:
        m = _MONTH_RE.match(self.label)
        d = _DAY_RE.match(self.label)
        try:
            if m:
                year, month = int(m[1]), int(m[2])
                start = datetime(year, month, 1, tzinfo=UTC)
                end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            elif d:
                start = datetime(int(d[1]), int(d[2]), int(d[3]), tzinfo=UTC)
                end = start + timedelta(days=1)
            else:
                raise ValueError
            if start.year < 2000:
                raise ValueError
        except (ValueError, OverflowError):
            raise IdentityError(
                f"Validity period {self.label!r} is not valid.",
                "Use a month like 2026-11 or a day like 2026-11-26 (UTC).",
            ) from None
        return start, end

    @property
    def not_before(self) -> datetime:
        return self._bounds()[0]

    @property
    def not_after(self) -> datetime:
        """End of the period (exclusive)."""
        return self._bounds()[1]

    @classmethod
    def containing(cls, when: datetime | None = None, granularity: str = "month") -> Period:
        when = _utc(when)
        if granularity == "month":
            return cls(f"{when.year:04d}-{when.month:02d}")
        if granularity == "day":
            return cls(f"{when.year:04d}-{when.month:02d}-{when.day:02d}")
        raise ValueError("granularity must be 'month' or 'day'")

    def next(self) -> Period:
        """The period right after this one, with the same granularity."""
        granularity = "day" if _DAY_RE.match(self.label) else "month"
        return Period.containing(self.not_after, granularity)

    def contains(self, when: datetime | None = None, skew: timedelta = timedelta(0)) -> bool:
        when = _utc(when)
        start, end = self._bounds()
        return start - skew <= when < end + skew

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Identity:
    """Who an IBE key belongs to. ``device_id`` is None for the cloudlet itself.

    ``home`` is the device's home cloudlet when that is not ``cloudlet_id``
    (a visiting device); None means the device is the issuer's own.
    """

    cloudlet_id: str
    device_id: str | None
    period: Period
    home: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.period, Period):
            raise TypeError("period must be a Period")
        if normalise_id(self.cloudlet_id, "cloudlet id") != self.cloudlet_id:
            raise IdentityError(f"cloudlet id {self.cloudlet_id!r} is not in canonical form.")
        if self.device_id is not None and (
            normalise_id(self.device_id, "device id") != self.device_id
        ):
            raise IdentityError(f"device id {self.device_id!r} is not in canonical form.")
        if self.home is not None:
            if self.device_id is None:
                raise IdentityError("Only a device identity has a home cloudlet.")
            if normalise_id(self.home, "home cloudlet") != self.home:
                raise IdentityError(f"home cloudlet {self.home!r} is not in canonical form.")
            if self.home == self.cloudlet_id:
                raise IdentityError(
                    f"{self.device_id!r} is {self.cloudlet_id!r}'s own device; "
                    "its identity carries no home."
                )

    @property
    def is_device(self) -> bool:
        return self.device_id is not None

    @property
    def home_cloudlet(self) -> str:
        """The cloudlet that paired this device (the issuer, unless it is a visitor)."""
        return self.home or self.cloudlet_id

    @property
    def device_name(self) -> str | None:
        """The device part of the identity: ``tablet-07`` or ``tablet-07@cl-bravo``."""
        if self.device_id is None:
            return None
        return f"{self.device_id}@{self.home}" if self.home else self.device_id

    def __str__(self) -> str:
        device = self.device_name or "-"
        return f"{IDENTITY_PREFIX}/{self.cloudlet_id}/{device}/{self.period.label}"

    def encode(self) -> bytes:
        """The bytes that are hashed to the curve: the canonical string."""
        return str(self).encode("ascii")

    @classmethod
    def parse(cls, text: str | bytes) -> Identity:
        """Strict inverse of ``str()``: anything non-canonical is refused."""
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("ascii")
            except UnicodeDecodeError:
                raise IdentityError("The identity is not ASCII.") from None
        if not isinstance(text, str):
            raise TypeError("identity must be str or bytes")
        parts = text.split("/")
        if len(parts) != 4 or parts[0] != IDENTITY_PREFIX:
            raise IdentityError(
                f"{text!r} is not a cloudlet identity.",
                f"Expected {IDENTITY_PREFIX}/<cloudlet>/<device or ->/<period>.",
            )
        device = home = None
        if parts[2] != "-":
            device, _, home = parts[2].partition("@")
        ident = cls(parts[1], device, Period(parts[3]), home or None)
        if str(ident) != text:
            raise IdentityError(f"{text!r} is not in canonical form.")
        return ident


def device_identity(
    cloudlet_id: str,
    device_id: str,
    period: Period | str | None = None,
    now: datetime | None = None,
    home: str | None = None,
) -> Identity:
    """Identity for a device key; the period defaults to the current month.

    ``home`` names a visiting device's home cloudlet; the issuer's own
    devices (``home`` None or equal to ``cloudlet_id``) carry none.
    """
    if period is None:
        period = Period.containing(now)
    elif isinstance(period, str):
        period = Period(period)
    cloudlet_id = normalise_id(cloudlet_id, "cloudlet id")
    if home is not None:
        home = normalise_id(home, "home cloudlet")
    return Identity(
        cloudlet_id,
        normalise_id(device_id, "device id"),
        period,
        None if home == cloudlet_id else home,
    )


def cloudlet_identity(
    cloudlet_id: str, period: Period | str | None = None, now: datetime | None = None
) -> Identity:
    if period is None:
        period = Period.containing(now)
    elif isinstance(period, str):
        period = Period(period)
    return Identity(normalise_id(cloudlet_id, "cloudlet id"), None, period)


def check_current(
    identity: Identity, now: datetime | None = None, skew: timedelta = DEFAULT_SKEW
) -> None:
    """Raise ExpiredIdentityError unless ``now`` is inside the identity's period.

    ``skew`` tolerates small clock differences between vehicles at the edges.
    """
    if not isinstance(identity, Identity):
        raise TypeError("expected an Identity")
    now = _utc(now)
    if identity.period.contains(now, skew):
        return
    period = identity.period
    if now < period.not_before:
        raise ExpiredIdentityError(
            f"The credential for {identity} is not valid before "
            f"{period.not_before:%Y-%m-%d %H:%M} UTC (now {now:%Y-%m-%d %H:%M} UTC)."
        )
    raise ExpiredIdentityError(
        f"The credential for {identity} expired at "
        f"{period.not_after:%Y-%m-%d %H:%M} UTC (now {now:%Y-%m-%d %H:%M} UTC)."
    )
