"""Voice codes: short, CSPRNG-made, easy to read over a radio, typo-checked.

A code is a few words from ``WORDS`` followed by one check word. KD-Cloudlet
used 6 characters from a non-cryptographic generator; here every word comes
from ``secrets`` (or an injected rng in tests), the default carries 24 bits
(3 words of log2(257) bits), and the code only ever feeds a PAKE, so an
eavesdropper gets no offline guessing and an active attacker one guess per
attempt (and the code dies after a few).

The word list is our own: 257 common English nouns, lowercase, 4-8 letters,
in alphabetical order, any two at least 3 edits apart (insertions, deletions,
substitutions, and swaps of two adjacent letters, each counted as one edit),
and no two sharing their first three letters: one or two wrong letters never
turn a word into another, and typing three letters is enough. 257 is prime, which makes the check
word exact: with data words w_1..w_n the check word is

    sum(i * w_i) mod 257

so any single wrong word, and any swap of two adjacent words, is always
caught (257 does not divide a non-zero difference times a weight < 257).

Typed input is normalised before use: NFC, case folded, and any run of
spaces, hyphens, dots, commas, slashes or underscores is a separator.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from cloudlet.crypto.curve import Rng, default_rng
from cloudlet.errors import CodeFormatError

__all__ = [
    "DEFAULT_BITS",
    "MIN_BITS",
    "VoiceCode",
    "WORDS",
    "check_word",
    "generate_code",
    "parse_code",
]

DEFAULT_BITS = 20
MIN_BITS = 20

WORDS: tuple[str, ...] = (
    "acid",
    "adobe",
    "agent",
    "album",
    "anchor",
    "apple",
    "arctic",
    "aspen",
    "atlas",
    "autumn",
    "bamboo",
    "banjo",
    "barrel",
    "basket",
    "beacon",
    "bonfire",
    "bottle",
    "boxer",
    "bridge",
    "buffalo",
    "bugle",
    "butter",
    "cabin",
    "camel",
    "canyon",
    "carpet",
    "catfish",
    "cherry",
    "circus",
    "clover",
    "cobra",
    "cotton",
    "cougar",
    "coyote",
    "crystal",
    "cupcake",
    "cyclone",
    "desert",
    "diamond",
    "dinner",
    "doctor",
    "dolphin",
    "donkey",
    "dragon",
    "dynamo",
    "earth",
    "echo",
    "eclipse",
    "elbow",
    "ember",
    "emerald",
    "engine",
    "envelope",
    "exit",
    "farmer",
    "fence",
    "fiddle",
    "firefly",
    "flamingo",
    "flute",
    "forest",
    "fossil",
    "fountain",
    "frog",
    "funnel",
    "galaxy",
    "garden",
    "gazelle",
    "geyser",
    "giant",
    "giraffe",
    "glacier",
    "goblet",
    "gopher",
    "gorilla",
    "granite",
    "grizzly",
    "guitar",
    "gumbo",
    "gypsum",
    "harbor",
    "hippo",
    "hook",
    "horizon",
    "hotel",
    "iceberg",
    "igloo",
    "iguana",
    "index",
    "inkwell",
    "insect",
    "island",
    "ivory",
    "jackal",
    "jaguar",
    "jelly",
    "jigsaw",
    "journal",
    "jubilee",
    "juggler",
    "kangaroo",
    "kayak",
    "kidney",
    "kingdom",
    "kitten",
    "kiwi",
    "koala",
    "ladder",
    "lagoon",
    "lantern",
    "laptop",
    "lava",
    "lemon",
    "leopard",
    "lettuce",
    "library",
    "lilac",
    "lotus",
    "lunar",
    "lynx",
    "magpie",
    "marble",
    "mascot",
    "meadow",
    "mercury",
    "meteor",
    "mirror",
    "moose",
    "mosaic",
    "muffin",
    "mustang",
    "napkin",
    "narwhal",
    "nebula",
    "nickel",
    "ninja",
    "nugget",
    "nutmeg",
    "oasis",
    "oatmeal",
    "ocean",
    "octopus",
    "office",
    "olive",
    "onion",
    "opal",
    "orange",
    "orbit",
    "orchid",
    "ostrich",
    "oxygen",
    "pagoda",
    "palace",
    "parrot",
    "pasta",
    "peanut",
    "pebble",
    "pelican",
    "pencil",
    "pepper",
    "pheasant",
    "pigeon",
    "pilot",
    "pirate",
    "polar",
    "pony",
    "popcorn",
    "potato",
    "prism",
    "pumpkin",
    "puzzle",
    "python",
    "queen",
    "quilt",
    "quota",
    "rabbit",
    "raft",
    "razor",
    "recipe",
    "reindeer",
    "relic",
    "rhino",
    "ribbon",
    "rocket",
    "rodeo",
    "rosebud",
    "runway",
    "saffron",
    "sailor",
    "sandal",
    "sausage",
    "scarf",
    "seagull",
    "sesame",
    "sierra",
    "siren",
    "sketch",
    "skunk",
    "snail",
    "snowman",
    "soccer",
    "soda",
    "sponge",
    "squid",
    "statue",
    "stove",
    "summit",
    "sunset",
    "surfer",
    "swallow",
    "symbol",
    "taco",
    "tadpole",
    "tavern",
    "teapot",
    "tennis",
    "tinsel",
    "toast",
    "toffee",
    "tornado",
    "toucan",
    "tulip",
    "tundra",
    "tuxedo",
    "ukulele",
    "unicorn",
    "uranium",
    "vacuum",
    "valley",
    "velvet",
    "venus",
    "vessel",
    "viking",
    "violin",
    "viper",
    "volcano",
    "voyage",
    "vulture",
    "waffle",
    "walnut",
    "wasabi",
    "whale",
    "wheat",
    "widget",
    "window",
    "wizard",
    "wolf",
    "wombat",
    "wrench",
    "yacht",
    "yeti",
    "yogurt",
    "zenith",
    "zeppelin",
    "zigzag",
    "zodiac",
    "zucchini",
)
_RADIX = len(WORDS)  # 257, prime
_INDEX = {word: i for i, word in enumerate(WORDS)}
_BITS_PER_WORD = math.log2(_RADIX)
_SEPARATORS = re.compile(r"[\s\-_.,;:/|+]+")
# A code shorter than this is refused even if its check word fits: a dropped
# word then gets a clear message instead of a 1-in-257 pass and a wasted
# PAKE attempt, and nothing can run the PAKE on a code below MIN_BITS.
_MIN_DATA_WORDS = math.ceil(MIN_BITS / _BITS_PER_WORD)


def check_word(indices: list[int] | tuple[int, ...]) -> str:
    """The check word for data words given by their list indices."""
    total = sum((i + 1) * w for i, w in enumerate(indices)) % _RADIX
    return WORDS[total]


@dataclass(frozen=True)
class VoiceCode:
    """A checked code: data words plus the check word, in canonical form."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.words, tuple) or not all(isinstance(w, str) for w in self.words):
            raise TypeError("words must be a tuple of str")
        if len(self.words) - 1 < _MIN_DATA_WORDS:
            raise CodeFormatError(
                f"The code has {len(self.words)} words; a code has at least {_MIN_DATA_WORDS + 1}.",
                "Ask the other admin to read the whole code again.",
            )
        for word in self.words:
            if word not in _INDEX:
                raise CodeFormatError(f"{word!r} is not a code word.")
        data = [_INDEX[w] for w in self.words[:-1]]
        if check_word(data) != self.words[-1]:
            raise CodeFormatError(
                "The code does not check out: probably one word was misheard or mistyped."
            )

    @property
    def entropy_bits(self) -> float:
        return (len(self.words) - 1) * _BITS_PER_WORD

    def __str__(self) -> str:
        return "-".join(self.words)

    def spoken(self) -> str:
        """How an admin reads it out: capitals, a pause between words."""
        return "  ".join(word.upper() for word in self.words)

    def secret(self) -> bytes:
        """The PAKE password: canonical, so both sides derive the same bytes."""
        return b"cloudlet-voice-code-v1:" + str(self).encode("ascii")


def _uniform_index(rng: Rng) -> int:
    limit = (65536 // _RADIX) * _RADIX
    while True:
        data = rng(2)
        if len(data) != 2:
            raise ValueError("rng returned the wrong number of bytes")
        value = int.from_bytes(data, "big")
        if value < limit:
            return value % _RADIX


def generate_code(bits: int = DEFAULT_BITS, rng: Rng | None = None) -> VoiceCode:
    """A fresh code with at least ``bits`` bits of entropy (before the check word)."""
    if not isinstance(bits, int) or isinstance(bits, bool):
        raise TypeError("bits must be an int")
    if bits < MIN_BITS:
        raise ValueError(f"a voice code needs at least {MIN_BITS} bits of entropy")
    rng = rng or default_rng
    count = math.ceil(bits / _BITS_PER_WORD)
    data = [_uniform_index(rng) for _ in range(count)]
    return VoiceCode(tuple(WORDS[i] for i in data) + (check_word(data),))


def _distance(a: str, b: str) -> int:
    """Edits from ``a`` to ``b``, a swap of adjacent letters counting as one
    (optimal string alignment distance)."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            best = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                best = min(best, rows[-2][j - 2] + 1)
            row.append(best)
        rows.append(row)
    return rows[-1][-1]


def _resolve(token: str) -> str:
    if token in _INDEX:
        return token
    if len(token) >= 3:
        matches = [w for w in WORDS if w.startswith(token)]
        if len(matches) == 1:
            return matches[0]
    near = sorted(WORDS, key=lambda w: (_distance(token, w), w))[:2]
    raise CodeFormatError(
        f"{token!r} is not a code word (did you mean {' or '.join(near)}?).",
        "Ask the other admin to spell that word.",
    )


def parse_code(text: str, words: int | None = None) -> VoiceCode:
    """Turn what an admin typed into a VoiceCode, or say what is wrong with it.

    ``words`` is the expected total number of words (data plus check), when
    known; a missing or extra word is then reported as such.
    """
    if not isinstance(text, str):
        raise TypeError("code must be a str")
    norm = unicodedata.normalize("NFC", text).casefold().strip()
    tokens = [t for t in _SEPARATORS.split(norm) if t]
    if words is not None and len(tokens) != words:
        raise CodeFormatError(
            f"The code has {len(tokens)} words, but {words} are expected.",
            "Ask the other admin to read the whole code again.",
        )
    if len(tokens) < _MIN_DATA_WORDS + 1:
        raise CodeFormatError(
            f"That is not a complete code: {len(tokens)} word(s), a code has at least "
            f"{_MIN_DATA_WORDS + 1}.",
            "Type every word of the code, the last (check) word included.",
        )
    resolved = tuple(_resolve(t) for t in tokens)
    data = [_INDEX[w] for w in resolved[:-1]]
    if check_word(data) != resolved[-1]:
        raise CodeFormatError(
            "The code does not check out: probably one word was misheard or mistyped.",
            "Ask the other admin to read it again, slowly, word by word.",
        )
    return VoiceCode(resolved)
