"""Distributed differential privacy on top of secure aggregation (docs/privacy.md).

Each client clips its update in L2 norm, encodes it in the fixed-point domain of the protocol and
adds integer Skellam noise; the secure sum over at least `min_survivors` honest clients then
carries enough noise for the configured (epsilon, delta). The gateway keeps a ledger of the
privacy spent across rounds with dp-accounting's RDP accountant.

    # agent (numpy only)                         # gateway (needs dp-accounting)
    from ztfl.privacy import add_noise, clip_l2       from privacy.accountant import calibrate, PrivacyLedger
    words = fixedpoint.encode(clip_l2(u, p.clip_norm), 1, ...)
    session.set_encoded_input(add_noise(words, p, rng))
"""
from ztfl.privacy.mechanisms import add_noise, clip_l2, skellam_noise
from ztfl.privacy.params import DpParams, PrivacyBudget

__all__ = ["DpParams", "PrivacyBudget", "add_noise", "clip_l2", "skellam_noise"]
