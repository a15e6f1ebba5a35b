"""Crypto core: pairing-based identity keys, device proofs, voice-code pairing.

Modules, lowest first (imports only run downward):

* ``curve``    -- BLS12-381 behind one interface (the only pairing-library user)
* ``identity`` -- identity strings with validity periods
* ``ibe``      -- Boneh-Franklin IBE, CCA-secure, hybrid with AES-256-GCM
* ``auth``     -- device proofs (Cha-Cheon signatures) and the replay window
* ``codes``    -- voice codes for the radio
* ``pake``     -- SPAKE2 pairing state machine

See docs/crypto.md for the scheme and the reasoning.
"""
