"""TPM 2.0 attestation for ztfl: "no quote, no seat".

Nothing here speaks MQTT: callers carry the bytes of the messages below over the broker
(agent topic kind `attest`, gateway broadcast kind `attest`).

Agent side (needs tpm2-pytss, the `tpm` extra)
----------------------------------------------
    from ztfl.attestation.tpm_agent import TpmAttestor
    tpm = TpmAttestor(tcti="swtpm:host=127.0.0.1,port=2321" or "device:/dev/tpmrm0",
                      state_dir=..., pcr_index=23)
    tpm.ensure_ak()                                   # create once, then load the persistent AK
    tpm.extend_measurement(measure_agent(repo, [model_path]))   # at start (attestation.measure)
    req  = tpm.enrolment_request(agent_id, profile)   # EnrolmentRequest -> gateway
    resp = tpm.activate(agent_id, challenge)          # EnrolmentChallenge -> ActivationResponse
    ev   = tpm.quote(nonce, round_id, public_keys, "sha256:23")   # QuoteEvidence (per round)
    ev.to_bytes() / QuoteEvidence.from_bytes(b)

Software-rooted devices (ESP32, no TPM) sign instead with their provisioned Ed25519 device key:
    from ztfl.attestation.software_identity import sign_software_quote
    ev = sign_software_quote(device_seed, nonce, round_id, public_keys)   # SoftwareEvidence

Binding (attestation.binding)
-----------------------------
    qualifying_data = SHA-256(nonce[32] || u64_be(round_id) || public_keys)
The quote's extraData is exactly this; a device key signs SOFTWARE_QUOTE_LABEL || this.
`public_keys` is the byte string of the agent's protocol public keys for the round, exactly as
the agent advertises them (the gateway passes the same bytes it received).

Gateway side (pure Python + cryptography; enrolment also uses tpm2-pytss' MakeCredential)
----------------------------------------------------------------------------------------
    from ztfl.attestation import AttestationPolicy, IdentityRegistry, EnrolmentAuthority, Verifier
    policy   = AttestationPolicy(hash_alg="sha256", pcrs=(23,),
                                 allowlist={"raspberry-pi-4": {23: {expected_pcr(m)}}},
                                 allow_software_rooted=True, software_rooted_profiles={"esp32"})
    registry = IdentityRegistry.load("gateway-state/identities.json")
    registry.add_software_device("esp-01", "esp32", device_public_key)   # from provisioning
    authority = EnrolmentAuthority(registry, policy)
    challenge = authority.begin(EnrolmentRequest.from_bytes(b))          # MakeCredential
    identity  = authority.complete(ActivationResponse.from_bytes(b))     # now active
    verifier  = Verifier(registry, policy)
    nonce     = verifier.issue_nonce(round_id)          # 32 random bytes, single use per agent
    seat      = verifier.verify(agent_id, round_id, public_keys, evidence_bytes)
              # -> VerifiedIdentity(agent_id, profile, software_rooted, round_id, pcr_values, clock)
              # or raises one subclass of attestation.errors.AttestationError; `exc.reason` is
              # a stable code for metrics; verifier.metrics / verifier.rejections keep the count
              # and the stored reasons.

CLI: `ztfl attest quote|verify|measure`, `ztfl provision`, `ztfl bench attest`.
"""
from ztfl.attestation.binding import NONCE_BYTES, qualifying_data, software_quote_message
from ztfl.attestation.enrolment import EnrolmentAuthority
from ztfl.attestation.errors import AttestationError, EnrolmentError, PolicyError, TpmError
from ztfl.attestation.messages import (ActivationResponse, EnrolmentChallenge, EnrolmentRequest, QuoteEvidence,
                                  SoftwareEvidence, decode_evidence)
from ztfl.attestation.nonces import NonceBook
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.registry import EnrolledIdentity, IdentityRegistry
from ztfl.attestation.verifier import Rejection, VerifiedIdentity, Verifier

__all__ = [
    "NONCE_BYTES", "qualifying_data", "software_quote_message", "EnrolmentAuthority", "AttestationError",
    "EnrolmentError", "PolicyError", "TpmError", "ActivationResponse", "EnrolmentChallenge",
    "EnrolmentRequest", "QuoteEvidence", "SoftwareEvidence", "decode_evidence", "NonceBook",
    "AttestationPolicy", "EnrolledIdentity", "IdentityRegistry", "Rejection", "VerifiedIdentity", "Verifier",
]
