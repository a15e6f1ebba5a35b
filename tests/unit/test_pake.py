"""pake.py: the pairing state machine, honest and hostile peers."""

from __future__ import annotations

import pytest
from conftest import DetRng

from cloudlet.crypto import codes, pake
from cloudlet.crypto.pake import MSG_CONFIRM, MSG_ELEMENT, AttemptCounter, Pairing, State
from cloudlet.errors import (
    CloudletError,
    CodeExhausted,
    CodeMismatch,
    PairingError,
    ProtocolError,
)

CODE = codes.generate_code(rng=DetRng(b"kat-code"))
OTHER = codes.generate_code(rng=DetRng(b"other-code"))


def _pair(code_a=CODE, code_b=CODE, purpose_b=pake.PURPOSE_CLOUDLET_PAIRING, seed=b"kat"):
    a = Pairing("cl-alpha", "cl-bravo", code_a, AttemptCounter(), rng=DetRng(seed + b"-a"))
    b = Pairing(
        "cl-bravo",
        "cl-alpha",
        code_b,
        AttemptCounter(),
        purpose=purpose_b,
        rng=DetRng(seed + b"-b"),
    )
    return a, b


def _exchange(a, b):
    """Run both sides; return the error each side saw (None on success)."""
    errors = {}
    ea, eb = a.start(), b.start()
    ca, cb = a.receive(eb), b.receive(ea)
    for side, msg in ((a, cb), (b, ca)):
        try:
            assert side.receive(msg) is None
            errors[side.my_id] = None
        except CloudletError as exc:
            errors[side.my_id] = exc
    return errors


def test_honest_pairing_known_answer():
    a, b = _pair()
    assert _exchange(a, b) == {"cl-alpha": None, "cl-bravo": None}
    ra, rb = a.result, b.result
    assert a.state is State.PAIRED and b.state is State.PAIRED
    assert (
        ra.transcript_hash.hex()
        == "4db6c6e90cda2b420393c238033c97b80ec52aeeb49b921772f9bcf0f12975e0"
    )
    assert ra.sae_password == "WULBQPQTJCV4T5QUT4AKPKXS"
    assert ra.session_key == rb.session_key and ra.sae_password == rb.sae_password
    assert ra.bundle_key("cl-alpha") == rb.bundle_key("cl-alpha")
    assert ra.bundle_key("cl-alpha") != ra.bundle_key("cl-bravo")
    assert "secret" in repr(ra) and ra.session_key.hex() not in repr(ra)


def test_wrong_code_detected_on_both_sides():
    a, b = _pair(code_b=OTHER)
    errors = _exchange(a, b)
    for side in (a, b):
        err = errors[side.my_id]
        assert isinstance(err, CodeMismatch)
        assert "read it again" in str(err) and "2 attempt(s) left" in str(err)
        assert side.state is State.FAILED
        with pytest.raises(PairingError):
            _ = side.result


def test_man_in_the_middle_with_own_code_fails():
    """Mallory runs one pairing towards each side with her own code and relays."""
    a, b = _pair(seed=b"mitm")
    m_to_a = Pairing("cl-bravo", "cl-alpha", OTHER, AttemptCounter(), rng=DetRng(b"m1"))
    m_to_b = Pairing("cl-alpha", "cl-bravo", OTHER, AttemptCounter(), rng=DetRng(b"m2"))
    ea, eb = a.start(), b.start()
    ma, mb = m_to_a.start(), m_to_b.start()
    conf_a = a.receive(ma)  # A thinks this is B's element
    conf_b = b.receive(mb)
    conf_ma = m_to_a.receive(ea)
    conf_mb = m_to_b.receive(eb)
    with pytest.raises(CodeMismatch):
        a.receive(conf_ma)
    with pytest.raises(CodeMismatch):
        b.receive(conf_mb)
    with pytest.raises(CodeMismatch):
        m_to_a.receive(conf_a)  # and Mallory learns she guessed wrong, nothing more
    with pytest.raises(CodeMismatch):
        m_to_b.receive(conf_b)


def test_pure_relay_is_harmless():
    a, b = _pair(seed=b"relay")
    assert _exchange(a, b) == {"cl-alpha": None, "cl-bravo": None}


def test_purpose_is_bound():
    a, b = _pair(purpose_b="device-pairing-v1")
    errors = _exchange(a, b)
    assert all(isinstance(e, CodeMismatch) for e in errors.values())


def test_attempt_limit_kills_the_code():
    counter = AttemptCounter(limit=3)
    for i in range(3):
        a = Pairing("cl-alpha", "cl-bravo", CODE, counter, rng=DetRng(b"%d" % i))
        b = Pairing("cl-bravo", "cl-alpha", OTHER, AttemptCounter(), rng=DetRng(b"x%d" % i))
        ea, eb = a.start(), b.start()
        a.receive(eb)
        with pytest.raises(CodeMismatch) as info:
            a.receive(b.receive(ea))
        assert info.value.attempts_left == 2 - i
    assert counter.remaining == 0
    with pytest.raises(CodeExhausted, match="no longer accepted"):
        Pairing("cl-alpha", "cl-bravo", CODE, counter)
    restored = AttemptCounter.from_dict(counter.to_dict())
    with pytest.raises(CodeExhausted):
        restored.check()


def test_attacker_who_hangs_up_still_pays():
    """Never sending a confirmation must not make guesses free."""
    counter = AttemptCounter(limit=3)
    for i in range(3):
        a = Pairing("cl-alpha", "cl-bravo", CODE, counter)
        guess = Pairing("cl-bravo", "cl-alpha", OTHER, AttemptCounter(), rng=DetRng(b"g%d" % i))
        a.start()
        reply = a.receive(guess.start())  # our MAC goes out: one guess testable offline ...
        assert pake.decode_message(reply)[0] == MSG_CONFIRM
        assert counter.used == i + 1  # ... so it was charged before it left
        # ... and the attacker hangs up here, never sending its confirmation.
    with pytest.raises(CodeExhausted):
        Pairing("cl-alpha", "cl-bravo", CODE, counter)


def test_counter_is_checked_again_when_charged():
    """Two attempts started in parallel on the last try: only one may test a guess."""
    counter = AttemptCounter(limit=1)
    first = Pairing("cl-alpha", "cl-bravo", CODE, counter)
    second = Pairing("cl-alpha", "cl-bravo", CODE, counter)
    first.start(), second.start()
    first.receive(Pairing("cl-bravo", "cl-alpha", OTHER, AttemptCounter()).start())
    with pytest.raises(CodeExhausted):
        second.receive(Pairing("cl-bravo", "cl-alpha", OTHER, AttemptCounter()).start())
    assert second.state is State.FAILED


def test_damaged_saved_counter_is_refused():
    with pytest.raises(CodeExhausted, match="damaged"):
        AttemptCounter.from_dict({"limit": 3, "used": -1, "consumed": False})
    with pytest.raises(CodeExhausted, match="damaged"):
        AttemptCounter.from_dict({"limit": 3})


def test_success_uses_the_code_up():
    a, b = _pair(seed=b"once")
    _exchange(a, b)
    with pytest.raises(CodeExhausted, match="already used"):
        Pairing("cl-alpha", "cl-bravo", CODE, a.attempts)


def test_out_of_order_messages_fail_cleanly():
    a, b = _pair()
    ea, eb = a.start(), b.start()
    cb = b.receive(ea)
    # CONFIRM before ELEMENT:
    with pytest.raises(ProtocolError, match="Unexpected"):
        a.receive(cb)
    assert a.state is State.FAILED
    with pytest.raises(PairingError, match="already failed"):
        a.receive(eb)
    # Second start:
    c = Pairing("cl-alpha", "cl-bravo", CODE, AttemptCounter())
    c.start()
    with pytest.raises(ProtocolError):
        c.start()
    # Message before start:
    d = Pairing("cl-alpha", "cl-bravo", CODE, AttemptCounter())
    with pytest.raises(ProtocolError):
        d.receive(eb)
    assert d.state is State.FAILED


def test_message_after_success_is_refused_but_does_not_undo_it():
    a, b = _pair(seed=b"after")
    _exchange(a, b)
    with pytest.raises(ProtocolError, match="after the pairing was complete"):
        a.receive(pake.encode_message(MSG_CONFIRM, bytes(32)))
    with pytest.raises(ProtocolError):
        a.receive(b"junk")
    assert a.state is State.PAIRED and a.result.session_key == b.result.session_key


def test_transitions_are_listed_in_one_table():
    """Every handler is reached only through the table, and only forwards."""
    order = [State.START, State.WAIT_ELEMENT, State.WAIT_CONFIRM, State.PAIRED]
    for (state, _event), (handler, target) in Pairing.TRANSITIONS.items():
        assert callable(getattr(Pairing, handler))
        assert order.index(target) == order.index(state) + 1
    assert not any(s in (State.PAIRED, State.FAILED) for s, _ in Pairing.TRANSITIONS)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"junk",
        b"XXXX" + bytes(40),
        pake.encode_message(MSG_ELEMENT, bytes(33))[:-1],  # truncated
        pake.encode_message(MSG_ELEMENT, bytes(33)) + b"\x00",  # trailing
        pake.encode_message(MSG_ELEMENT, bytes(32)),  # wrong size
        pake.encode_message(9, bytes(33)),  # unknown type
        b"CLPK\x02" + pake.encode_message(MSG_ELEMENT, bytes(33))[5:],  # unknown version
        pake.encode_message(MSG_ELEMENT, b"B" + bytes(32)),  # not a point / low order
        pake.encode_message(MSG_ELEMENT, b"B" + b"\xff" * 32),  # not a point
        pake.encode_message(MSG_ELEMENT, b"A" + bytes(32)),  # same side as us
        "not bytes",
    ],
)
def test_malformed_messages_end_in_failed_state(bad):
    a = Pairing("cl-alpha", "cl-bravo", CODE, AttemptCounter())
    a.start()
    with pytest.raises(PairingError):
        a.receive(bad)
    assert a.state is State.FAILED


def test_reflected_element_rejected():
    a = Pairing("cl-alpha", "cl-bravo", CODE, AttemptCounter())
    ea = a.start()
    with pytest.raises(ProtocolError):
        a.receive(ea)
    assert a.state is State.FAILED


def test_bad_setup_rejected():
    with pytest.raises(PairingError, match="Both sides"):
        Pairing("cl-alpha", "CL-Alpha", CODE, AttemptCounter())
    with pytest.raises(TypeError):
        Pairing("cl-alpha", "cl-bravo", str(CODE), AttemptCounter())


def test_link_password_depends_on_code_not_order():
    p1 = pake.link_password(CODE, "cl-alpha", "cl-bravo")
    assert p1 == "ZBYUF7GHNXJFPOMMWPK5VAY4"
    assert p1 == pake.link_password(CODE, "cl-bravo", "cl-alpha")
    assert p1 != pake.link_password(OTHER, "cl-alpha", "cl-bravo")
    assert p1 != pake.link_password(CODE, "cl-alpha", "cl-charlie")
