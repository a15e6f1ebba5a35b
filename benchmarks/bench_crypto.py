"""Crypto core figures: medians over several runs, printed, never asserted.

    PYTHONPATH=. python benchmarks/bench_crypto.py [--runs 7] [--bundles 1000]

"bare" rows time the same group operations called on the pairing library
directly, so the ratio column is the cost of our wrappers, hashing, KDF and
AEAD on top of the mathematics (target: at most 1.5x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime

from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar
from spake2 import SPAKE2_A, SPAKE2_B

from cloudlet import bundles, formats
from cloudlet.crypto import auth, codes, curve, ibe, pake
from cloudlet.crypto.identity import device_identity

NOW = datetime.now(UTC)
PEM = "-----BEGIN CERTIFICATE-----\nMIIBbench\n-----END CERTIFICATE-----\n"


def median_ms(fn, runs: int, inner: int) -> float:
    fn()  # warm up (tables, caches)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner * 1000)
    return statistics.median(samples)


def paired_ms(ours, bare, runs: int, inner: int) -> tuple[float, float]:
    """Alternate ours/bare runs so background load hits both alike."""
    ours(), bare()
    a, b = [], []
    for _ in range(runs):
        for fn, out in ((ours, a), (bare, b)):
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            out.append((time.perf_counter() - start) / inner * 1000)
    return statistics.median(a), statistics.median(b)


def row(name: str, ms: float, target: str = "", bare: float | None = None) -> None:
    ratio = f"{ms / bare:5.2f}x of bare {bare:.3f} ms" if bare else ""
    print(f"  {name:<38} {ms:9.3f} ms   {target:<12} {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--bundles", type=int, default=1000)
    args = parser.parse_args()
    runs = args.runs

    master_a = ibe.setup("cl-alpha")
    master_b = ibe.setup("cl-bravo")
    params = master_a.params
    ident = device_identity("cl-alpha", "tablet-07", now=NOW)
    key = ibe.extract(master_a, ident)
    payload = os.urandom(256)
    ct = ibe.encrypt(params, ident, payload, now=NOW)
    ct_bytes = formats.encode_ciphertext(ct)
    verifier = auth.DeviceVerifier(params, auth.ReplayCache(10**7))

    # bare library equivalents
    dst, msg = ibe.DST_H1, ident.encode()
    s1, s2 = master_a.s_enc, master_a.s_sig
    r = Scalar(int.from_bytes(os.urandom(31), "big"))
    g2 = G2Point()
    q = G1Point.hash_to_curve(msg, dst)
    u = g2 * r

    def bare_extract():
        qq = G1Point.hash_to_curve(msg, dst)
        return qq * s1, qq * s2

    def bare_extract_one():
        return G1Point.hash_to_curve(msg, dst) * s1

    def bare_encrypt():
        qq = G1Point.hash_to_curve(msg, dst)
        return g2 * r, GT.pairing(qq * r, params.p_enc)

    def bare_decrypt():
        return GT.pairing(key.d_enc, u), g2 * r

    def bare_sign():
        return q * r, key.d_sig * (r + s1)

    def bare_pake():
        a, b = SPAKE2_A(b"pw", idA=b"a", idB=b"b"), SPAKE2_B(b"pw", idA=b"a", idB=b"b")
        ma, mb = a.start(), b.start()
        a.finish(mb), b.finish(ma)

    def bare_verify():
        qq = G1Point.hash_to_curve(msg, dst)
        return GT.pairing_check([key.d_sig, -(qq + qq * r)], [g2, params.p_sig])

    def do_verify():
        proof = auth.make_proof(key, "cl-alpha", b"GET /x", now=NOW)
        start = time.perf_counter()
        verifier.verify(proof, b"GET /x", NOW)
        return time.perf_counter() - start

    def median_verify():
        samples = []
        for _ in range(runs):
            samples.append(statistics.mean(do_verify() for _ in range(30)) * 1000)
        return statistics.median(samples)

    def pake_exchange():
        code = codes.generate_code()
        a = pake.Pairing("cl-alpha", "cl-bravo", code, pake.AttemptCounter())
        b = pake.Pairing("cl-bravo", "cl-alpha", code, pake.AttemptCounter())
        ea, eb = a.start(), b.start()
        ca, cb = a.receive(eb), b.receive(ea)
        a.receive(cb)
        b.receive(ca)

    print(f"cloudlet crypto benchmark: medians of {runs} runs, {os.cpu_count()} CPUs")
    print(
        f"  curve {curve.CURVE_NAME}, hash {curve.HASH_TO_G1_SUITE}, library py-arkworks-bls12381"
    )
    ours, bare = paired_ms(lambda: ibe.extract(master_a, ident), bare_extract, runs, 200)
    row("extract (d_enc + d_sig)", ours, "<= 0.5 ms", bare)
    ours, bare = paired_ms(
        lambda: ibe.identity_point(ident) * master_a.s_enc, bare_extract_one, runs, 200
    )
    row("  of which one key (h2c + 1 mul)", ours, "", bare)
    ours, bare = paired_ms(
        lambda: ibe.encrypt(params, ident, payload, now=NOW), bare_encrypt, runs, 100
    )
    row("encrypt 256 B", ours, "<= 3 ms", bare)
    ours, bare = paired_ms(lambda: ibe.decrypt(key, ct), bare_decrypt, runs, 100)
    row("decrypt 256 B", ours, "<= 3 ms", bare)
    ours, bare = paired_ms(
        lambda: ibe.decrypt(key, formats.decode_ciphertext(ct_bytes)), bare_decrypt, runs, 100
    )
    row("decrypt 256 B from bytes (+ decode)", ours, "", bare)
    ours, bare = paired_ms(
        lambda: auth.make_proof(key, "cl-alpha", b"GET /x", now=NOW), bare_sign, runs, 100
    )
    row("device-auth sign (make_proof)", ours, "", bare)
    row("device-auth verify", median_verify(), "", median_ms(bare_verify, runs, 50))
    ours, bare = paired_ms(pake_exchange, bare_pake, runs, 10)
    row("full PAKE exchange (both sides)", ours, "", bare)
    bare_bundle = median_ms(lambda: (bare_extract(), bare_encrypt(), bare_sign()), runs, 50)
    print("  bare reference operations:")
    for name, fn, inner in [
        ("hash_to_curve G1", lambda: G1Point.hash_to_curve(msg, dst), 200),
        ("G1 scalar mul", lambda: q * s1, 200),
        ("G2 scalar mul", lambda: g2 * r, 100),
        ("G2 fixed-base mul (ours)", lambda: curve.g2_mul_generator(r), 200),
        ("pairing", lambda: GT.pairing(q, g2), 50),
    ]:
        row(name, median_ms(fn, runs, inner))

    n = args.bundles
    jobs = [
        (
            device_identity("cl-bravo", f"dev-{i}", now=NOW),
            device_identity("cl-alpha", f"dev-{i}", now=NOW),
            bundles.NetworkCredential("cl-bravo-net", f"dev-{i}", "eap-secret"),
        )
        for i in range(n)
    ]

    def batch(workers: int) -> float:
        with bundles.BundleIssuer(master_b, workers) as issuer:
            issuer.warm()
            issuer.issue(params, jobs[:1], PEM, "10.20.0.1", 8443, now=NOW)  # workers up
            start = time.perf_counter()
            out = issuer.issue(params, jobs, PEM, "10.20.0.1", 8443, now=NOW)
            secs = time.perf_counter() - start
        assert len(out) == n
        return secs

    cpus = len(os.sched_getaffinity(0))
    print(f"  bare: extract + encrypt + sign, per bundle {bare_bundle:.3f} ms")
    for workers in sorted({1, cpus}):
        secs = statistics.median(batch(workers) for _ in range(3))
        ratio = secs * 1000 / n / bare_bundle
        print(
            f"  {n} device bundles, {workers} worker(s)       {secs:9.3f} s    <= 3 s"
            f"       {ratio:5.2f}x of bare (1 core)"
        )


if __name__ == "__main__":
    main()
