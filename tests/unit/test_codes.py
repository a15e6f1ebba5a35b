"""codes.py: the word list, generation, the check word and typed input."""

from __future__ import annotations

import itertools

import pytest
from conftest import DetRng
from hypothesis import given
from hypothesis import strategies as st

from cloudlet.crypto import codes
from cloudlet.errors import CodeFormatError


def _distance(a, b):
    return codes._distance(a, b)


def test_word_list_properties():
    words = codes.WORDS
    assert len(words) == 257 and all(257 % d for d in range(2, 17))  # prime
    assert len(set(words)) == len(words)
    assert all(w.isascii() and w.isalpha() and w.islower() and 4 <= len(w) <= 8 for w in words)
    assert len({w[:3] for w in words}) == len(words)  # three letters identify a word
    assert list(words) == sorted(words)
    # Every pair, with a swap of adjacent letters counted as one edit.
    assert min(_distance(a, b) for a, b in itertools.combinations(words, 2)) == 3


def test_the_distance_counts_a_swap_of_adjacent_letters_as_one_edit():
    assert _distance("orbit", "orbti") == 1
    assert _distance("nickel", "pickle") == 2  # a substitution and a swap
    assert _distance("agent", "magnet") == 2
    assert _distance("kitten", "sitting") == 3
    assert _distance("", "acid") == 4 and _distance("acid", "acid") == 0


def test_known_answer_with_injected_rng():
    assert str(codes.generate_code(rng=DetRng(b"kat-code"))) == "ukulele-bridge-fountain-sandal"
    long = codes.generate_code(40, rng=DetRng(b"kat-code"))
    assert str(long) == "ukulele-bridge-fountain-summit-gypsum-meadow"


def test_entropy_default_and_configurable():
    code = codes.generate_code()
    assert code.entropy_bits >= 20 and len(code.words) == 4
    assert codes.generate_code(64).entropy_bits >= 64
    with pytest.raises(ValueError):
        codes.generate_code(12)


def test_generation_is_uniformish():
    rng = DetRng(b"spread")
    seen = {codes.generate_code(rng=rng).words[0] for _ in range(600)}
    assert len(seen) > 200


def test_every_single_wrong_word_is_caught():
    code = codes.generate_code(rng=DetRng(b"one"))
    for pos in range(len(code.words)):
        for word in codes.WORDS:
            if word == code.words[pos]:
                continue
            typed = list(code.words)
            typed[pos] = word
            with pytest.raises(CodeFormatError, match="check"):
                codes.parse_code(" ".join(typed))


@given(st.integers(20, 60), st.binary(min_size=4, max_size=8))
def test_adjacent_swaps_are_caught(bits, seed):
    code = codes.generate_code(bits, rng=DetRng(seed))
    for i in range(len(code.words) - 1):
        typed = list(code.words)
        if typed[i] == typed[i + 1]:
            continue
        typed[i], typed[i + 1] = typed[i + 1], typed[i]
        with pytest.raises(CodeFormatError):
            codes.parse_code("-".join(typed))


def test_typed_input_is_normalised():
    code = codes.generate_code(rng=DetRng(b"norm"))
    w = code.words
    variants = [
        " ".join(w),
        "-".join(x.upper() for x in w),
        f"  {w[0].title()},  {w[1]} / {w[2]}_{w[3]}. ",
        " ".join(x[:3] for x in w),  # unique prefixes
    ]
    for text in variants:
        assert codes.parse_code(text) == code


def test_nfc_applied_before_splitting():
    """U+037E (Greek question mark) is canonically ';', a separator, only after NFC."""
    code = codes.VoiceCode(("exit", "lava", "runway", "fountain"))
    typed = "EXIT\u037elava\u037eRunway\u037efountain"
    assert codes.parse_code(typed) == code


def test_accents_are_not_silently_dropped():
    decomposed = "EXIT LAVA RUNWAY FOUNTAIN".replace("A", "A\u0301")
    with pytest.raises(CodeFormatError, match="not a code word"):
        codes.parse_code(decomposed)


def test_short_codes_refused():
    code = codes.generate_code(rng=DetRng(b"short"))
    data = [codes.WORDS.index(w) for w in code.words[:2]]
    two_data_words = [*code.words[:2], codes.check_word(data)]  # check word fits
    with pytest.raises(CodeFormatError, match="not a complete code"):
        codes.parse_code(" ".join(two_data_words))
    with pytest.raises(CodeFormatError, match="at least"):
        codes.VoiceCode(tuple(two_data_words))


def test_unknown_word_gets_a_suggestion():
    code = codes.generate_code(rng=DetRng(b"typo"))
    typed = [code.words[0][:-1] + "q"] + list(code.words[1:])
    with pytest.raises(CodeFormatError, match="did you mean") as info:
        codes.parse_code(" ".join(typed))
    assert code.words[0] in str(info.value)


def test_wrong_word_count():
    code = codes.generate_code(rng=DetRng(b"count"))
    with pytest.raises(CodeFormatError, match="3 words, but 4"):
        codes.parse_code(" ".join(code.words[:3]), words=4)
    with pytest.raises(CodeFormatError):
        codes.parse_code("")


def test_secret_is_canonical():
    code = codes.generate_code(rng=DetRng(b"s"))
    assert codes.parse_code(str(code).upper()).secret() == code.secret()
    assert code.spoken().split() == [w.upper() for w in code.words]
