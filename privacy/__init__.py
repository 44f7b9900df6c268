"""Distributed differential privacy on top of secure aggregation (docs/privacy.md).

Each client clips its update in L2 norm, encodes it in the fixed-point domain of the protocol and
adds exact integer Skellam noise from a cryptographic source (privacy.sampling); the secure sum
over at least `min_survivors` honest clients then carries enough noise for the configured
(epsilon, delta). The parameters are the ones the gateway signs into the round configuration;
each agent holds them to its own floor (privacy.floor) and ledger (privacy.ledger) through
privacy.guard. The gateway and every agent account with dp-accounting's RDP accountant.

    # agent                                          # gateway (needs dp-accounting)
    from ztfl.privacy import add_noise, clip_l2       from ztfl.privacy.accountant import calibrate
    params = guard.admit(announced, config)           params = calibrate(...).signed()
    words = fixedpoint.encode(clip_l2(u, params.clip_norm), 1, ...)
    session.set_encoded_input(add_noise(words, params))
"""
from ztfl.privacy.mechanisms import add_noise, clip_l2, skellam_noise
from ztfl.privacy.params import DpParams, PrivacyBudget

__all__ = ["DpParams", "PrivacyBudget", "add_noise", "clip_l2", "skellam_noise"]
