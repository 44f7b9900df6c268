"""Property-based tests (hypothesis): Shamir, fixed-point encoding, masking, wire round trips."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from ztfl.protocol import fixedpoint, prg, shamir, wire
from ztfl.protocol.config import ACTIVE, SEMI_HONEST, RoundConfig, SecurityFloor, check_rules
from ztfl.protocol.errors import (BelowSecurityFloor, ConfigurationError, GroupBelowFloor, MalformedMessage,
                                  NeighborsBelowFloor, SemiHonestRefused, ShamirError, ThresholdBelowFloor,
                                  ThresholdOverrideRefused, UnsupportedVersion)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
secrets = st.binary(min_size=32, max_size=32)


# ------------------------------------------------------------------ Shamir
@FAST
@given(secret=secrets, t=st.integers(1, 8), extra=st.integers(0, 5), data=st.data())
def test_any_t_shares_reconstruct(secret, t, extra, data):
    xs = data.draw(st.lists(st.integers(1, 0xFFFF), min_size=t + extra, max_size=t + extra, unique=True))
    shares = shamir.split(secret, t, xs)
    subset = data.draw(st.permutations(shares))[:t]
    assert shamir.reconstruct(subset, t) == secret


def solve_coefficients(points):
    """Coefficients (constant first) of the degree len-1 polynomial through `points`, mod p."""
    p, n = shamir.PRIME, len(points)
    rows = [[pow(x, j, p) for j in range(n)] + [y] for x, y in points]
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col])
        rows[col], rows[pivot] = rows[pivot], rows[col]
        inv = pow(rows[col][col], p - 2, p)
        rows[col] = [v * inv % p for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col]:
                f = rows[r][col]
                rows[r] = [(a - f * b) % p for a, b in zip(rows[r], rows[col])]
    return [row[n] for row in rows]


@FAST
@given(secret_a=secrets, secret_b=secrets, t=st.integers(2, 6), data=st.data())
def test_t_minus_one_shares_fit_every_secret(secret_a, secret_b, t, data):
    """Perfect hiding: any t-1 shares of A are also the shares of B under other coefficients,
    one for one, so they carry no information about which secret was dealt."""
    holders = data.draw(st.lists(st.integers(1, 0xFFFF), min_size=t, max_size=t, unique=True))
    xs = holders[: t - 1]
    shares_a = shamir.split(secret_a, t, holders)[: t - 1]
    coeffs = solve_coefficients([(0, int.from_bytes(secret_b, "little"))] + [(s.x, s.y) for s in shares_a])
    assert coeffs[0] == int.from_bytes(secret_b, "little")
    assert shamir.split_with_coefficients(secret_b, coeffs[1:], xs) == shares_a


@FAST
@given(secret=secrets, t=st.integers(2, 6))
def test_fewer_than_t_shares_do_not_reconstruct(secret, t):
    shares = shamir.split(secret, t, list(range(1, t + 3)))
    with pytest.raises(ShamirError):
        shamir.reconstruct(shares[: t - 1], t)


def test_share_errors():
    s = b"\x07" * 32
    with pytest.raises(ShamirError):
        shamir.split(s, 3, [1, 2, 2, 4])              # duplicate index
    with pytest.raises(ShamirError):
        shamir.split(s, 2, [0, 1, 2])                 # zero index: would be the secret itself
    with pytest.raises(ShamirError):
        shamir.split(s, 4, [1, 2, 3])                 # threshold above holders
    with pytest.raises(ShamirError):
        shamir.split(b"\x07" * 31, 2, [1, 2])         # secret of the wrong length
    shares = shamir.split(s, 2, [1, 2, 3])
    with pytest.raises(ShamirError):
        shamir.reconstruct([shares[0], shamir.Share(1, shares[1].y)], 2)
    with pytest.raises(ShamirError):
        shamir.decode_y(shares[0].y_bytes()[:32])     # mixed lengths
    with pytest.raises(ShamirError):
        shamir.decode_y(shamir.PRIME.to_bytes(33, "little"))
    with pytest.raises(ShamirError):
        shamir.reconstruct([shamir.Share(1, 5), shamir.Share(2, shamir.PRIME)], 2)


# ------------------------------------------------------------------ fixed point
floats = st.floats(min_value=-20, max_value=20, allow_nan=False, width=32)


@FAST
@given(values=st.lists(floats, min_size=1, max_size=50), bits=st.sampled_from([32, 64]),
       weight=st.integers(1, 100))
def test_encoding_round_trips_within_half_a_step_inside_the_clip(values, bits, weight):
    frac, clip = (12, 8.0)
    clip_q = int(clip * 2**frac)
    x = np.array(values)
    words = fixedpoint.encode(x, weight, frac, clip_q, bits)
    sums, w = fixedpoint.decode_sum(words, bits)
    assert w == weight
    decoded = sums / (weight * 2.0**frac)
    expected = np.clip(x, -clip, clip)
    assert np.all(np.abs(decoded - expected) <= 2.0 ** -(frac + 1) + 1e-12)


@FAST
@given(data=st.data(), bits=st.sampled_from([32, 64]), n=st.integers(1, 12))
def test_sum_of_encodings_mod_2b_decodes_to_the_integer_sum(data, bits, n):
    frac = 10
    clip_q = 1000 << frac
    config = RoundConfig(dim=5, threshold=1, max_clients=max(n, 2), mask_bits=bits, frac_bits=frac,
                         clip_q=clip_q, max_weight=50)
    total = np.zeros(6, dtype=prg.word_dtype(bits))
    expected = np.zeros(5, dtype=np.int64)
    weights = 0
    for _ in range(n):
        x = np.array(data.draw(st.lists(st.floats(-2000, 2000, allow_nan=False), min_size=5, max_size=5)))
        w = data.draw(st.integers(1, 50))
        total += fixedpoint.encode(x, w, config.frac_bits, config.clip_q, bits)
        expected += w * fixedpoint.quantize(x, frac, clip_q)
        weights += w
    sums, w = fixedpoint.decode_sum(total, bits)
    assert np.array_equal(sums, expected) and w == weights


def test_nan_and_infinity_are_refused():
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError):
            fixedpoint.encode(np.array([0.0, bad]), 1, 16, 1 << 16, 32)


def test_configuration_refuses_sums_that_could_wrap():
    RoundConfig(dim=1, threshold=51, max_clients=100, clip_q=(2**31 - 1) // 100, security=SEMI_HONEST)
    with pytest.raises(ConfigurationError):
        RoundConfig(dim=1, threshold=51, max_clients=100, clip_q=(2**31 - 1) // 100 + 1, security=SEMI_HONEST)
    with pytest.raises(ConfigurationError):
        RoundConfig.for_range(dim=1, max_clients=1000, threshold=667, clip=100.0, frac_bits=16, max_weight=10)
    RoundConfig.for_range(dim=1, max_clients=1000, threshold=667, clip=100.0, frac_bits=16, max_weight=10,
                          mask_bits=64)


def test_configuration_threshold_rules():
    # The wire value refuses only what cannot be expressed: t in 1..g, an even degree, known sizes.
    for bad in ({"threshold": 0}, {"threshold": 101}, {"threshold": 16, "neighbors": 14},
                {"threshold": 11, "neighbors": 13}, {"threshold": True}, {"threshold": 67, "mask_bits": 16},
                {"threshold": 67, "new_graph": True}, {"threshold": 67, "new_graph": True, "key_reuse": True}):
        with pytest.raises(ConfigurationError):
            RoundConfig(**{"dim": 1, "max_clients": 100, **bad})
    RoundConfig(dim=1, threshold=11, max_clients=100, neighbors=14, key_reuse=True, new_graph=True)
    # What agents take part in is the rule every one of them applies (and a server announces).
    check_rules(RoundConfig(dim=1, threshold=67, max_clients=100))
    check_rules(RoundConfig(dim=1, threshold=11, max_clients=100, neighbors=14))      # group of 15
    refused = [({"threshold": 66}, ThresholdBelowFloor),                              # active needs > 2n/3
               ({"threshold": 10, "neighbors": 14}, ThresholdBelowFloor),
               ({"threshold": 51, "security": SEMI_HONEST}, SemiHonestRefused),
               ({"threshold": 67, "security": SEMI_HONEST}, SemiHonestRefused),
               ({"threshold": 2, "threshold_override": True}, ThresholdOverrideRefused)]
    for fields, error in refused:
        with pytest.raises(error):
            check_rules(RoundConfig(**{"dim": 1, "max_clients": 100, **fields}))
        assert issubclass(error, BelowSecurityFloor) and issubclass(error, ConfigurationError)


def test_security_floor_is_the_agents_own_and_has_safe_defaults():
    floor = SecurityFloor()
    assert (floor.min_group, floor.min_neighbors) == (5, 4)
    floor.check_config(RoundConfig(dim=1, threshold=4, max_clients=5))
    floor.check_config(RoundConfig(dim=1, threshold=4, max_clients=100, neighbors=4))
    with pytest.raises(GroupBelowFloor):
        floor.check_config(RoundConfig(dim=1, threshold=3, max_clients=4))
    with pytest.raises(NeighborsBelowFloor):
        floor.check_config(RoundConfig(dim=1, threshold=3, max_clients=100, neighbors=2))
    with pytest.raises(GroupBelowFloor):
        SecurityFloor(min_group=16).check_config(RoundConfig(dim=1, threshold=11, max_clients=100, neighbors=14))
    with pytest.raises(ThresholdBelowFloor):
        floor.check_group(7, 12)                 # a roster of 12: t must exceed 8
    floor.check_group(9, 12)
    for bad in ({"min_group": 2}, {"min_neighbors": 1}, {"min_group": True}, {"min_group": 5.0}):
        with pytest.raises(ConfigurationError):
            SecurityFloor(**bad)
    with pytest.raises(AttributeError):
        floor.min_group = 3                      # frozen: nothing lowers it after provisioning


# ------------------------------------------------------------------ masking
@FAST
@given(n=st.integers(2, 6), words=st.integers(1, 40), bits=st.sampled_from([32, 64]), data=st.data())
def test_pairwise_masks_cancel_and_self_masks_hide(n, words, bits, data):
    dtype = prg.word_dtype(bits)
    keys = {(u, v): data.draw(st.binary(min_size=16, max_size=16)) for u in range(n) for v in range(u + 1, n)}
    inputs = [np.frombuffer(data.draw(st.binary(min_size=words * bits // 8, max_size=words * bits // 8)),
                            dtype=dtype).copy() for _ in range(n)]
    gen = prg.MaskGenerator(words, bits)
    total = np.zeros(words, dtype=dtype)
    for u in range(n):
        y = inputs[u].copy()
        for (a, b), key in keys.items():
            if u == a:
                gen.add(y, key)
            elif u == b:
                gen.subtract(y, key)
        total += y
    assert np.array_equal(total, sum(inputs, np.zeros(words, dtype=dtype)))


@FAST
@given(key=st.binary(min_size=16, max_size=16), n=st.integers(1, 300))
def test_mask_prefixes_agree_across_lengths(key, n):
    assert np.array_equal(prg.mask(key, n, 32), prg.mask(key, n + 7, 32)[:n])
    assert prg.mask(key, n, 64).tobytes() == prg.mask(key, 2 * n, 32).tobytes()


# ------------------------------------------------------------------ wire
SIGNER = SigningKey(b"\x01" * 32)
ids = st.lists(st.integers(1, 0xFFFF), max_size=20, unique=True).map(lambda xs: tuple(sorted(xs)))
meta = dict(sender=st.integers(0, 0xFFFF), epoch=st.integers(0, 2**32 - 1), round_id=st.integers(0, 2**32 - 1))


@FAST
@given(survivors=ids, **meta)
def test_consistency_request_round_trip(survivors, sender, epoch, round_id):
    msg = wire.ConsistencyRequest(sender, epoch, round_id, survivors)
    decoded = wire.decode_frame(msg.encode(SIGNER))
    assert decoded.verify(SIGNER.verify_key) == msg


@FAST
@given(owners=ids, data=st.data(), **meta)
def test_unmask_shares_round_trip(owners, data, sender, epoch, round_id):
    ys = [shamir.encode_y(data.draw(st.integers(0, shamir.PRIME - 1))) for _ in owners]
    split = data.draw(st.integers(0, len(owners)))
    pairs = tuple(zip(owners, ys))
    msg = wire.UnmaskShares(sender, epoch, round_id, pairs[:split], pairs[split:])
    assert wire.decode_frame(msg.encode(SIGNER)).message == msg


@FAST
@given(words=st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=50), bits=st.sampled_from([32, 64]), **meta)
def test_masked_input_round_trip(words, bits, sender, epoch, round_id):
    arr = np.array([w % 2**bits for w in words], dtype=prg.word_dtype(bits))
    frame = wire.MaskedInput(sender, epoch, round_id, bits, arr).encode(SIGNER)
    assert len(frame) == 20 + 8 + arr.size * bits // 8 + 64
    msg = wire.decode_frame(frame).message
    assert np.array_equal(msg.words, arr) and msg.mask_bits == bits


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes_only_ever_raise_malformed(data):
    try:
        wire.decode_frame(data)
    except (MalformedMessage, UnsupportedVersion):
        pass


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300), mtype=st.sampled_from(sorted(wire.MESSAGE_TYPES)))
def test_random_bodies_under_a_valid_header_only_ever_raise_malformed(body, mtype):
    head = wire.HEADER.pack(wire.MAGIC, wire.VERSION, mtype, 1, 0, 1, 1, len(body))
    try:
        wire.decode_frame(head + body + bytes(64))
    except MalformedMessage:
        pass


def test_security_constants_are_distinct():
    assert {ACTIVE, SEMI_HONEST} == {0, 1}


@FAST
@given(keys=st.lists(st.binary(min_size=16, max_size=16), min_size=0, max_size=12), split=st.integers(0, 12),
       bits=st.sampled_from([32, 64]), workers=st.integers(2, 4))
def test_threaded_mask_application_equals_sequential(keys, split, bits, workers):
    start = np.arange(33, dtype=prg.word_dtype(bits))
    one, many = start.copy(), start.copy()
    prg.apply_masks(one, keys[:split], keys[split:], bits, workers=1)
    prg.apply_masks(many, keys[:split], keys[split:], bits, workers=workers)
    assert np.array_equal(one, many)
