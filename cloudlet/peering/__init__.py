"""Cloudlet pairing (seed step 1): the voice-code exchange between two cloudlets.

``ledger`` keeps each code's attempts on disk, locked for the exchange;
``exchange`` runs the PAKE, swaps the sealed pairing bundles and stages the
peer, over any byte stream (the temporary link's TCP connection).
"""
