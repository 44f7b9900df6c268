"""Agent side: the TPM operations an agent needs, through tpm2-pytss ESAPI.

`TpmAttestor(tcti, state_dir)` creates (once) or loads the persistent attestation key (AK),
builds the enrolment request, answers the gateway's credential challenge with
ActivateCredential, extends the measurement PCR, and quotes; on boards with measured boot and
IMA each quote carries the boot event log and the IMA entries the gateway has not seen. swtpm (tests, demo) has no
resource manager and only three object slots, so every transient object and session is
flushed right after use.

The AK is a restricted ECDSA P-256 / SHA-256 signing key created as a primary object of the
endorsement hierarchy (so quotes carry real reset and restart counters) and made persistent
at `ak_handle`. The state directory remembers its public area: if the handle later holds
another key, that is an error, not a silent switch of identity.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

# ESYS prints an error line for every absent NV index probed while building the EK template.
os.environ.setdefault("TSS2_LOG", "all+none")

from tpm2_pytss import (ESAPI, ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_SE, TPM2B_DATA,  # noqa: E402
                        TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE,
                        TPMA_OBJECT, TPML_DIGEST_VALUES, TPML_PCR_SELECTION, TPMT_HA, TPMT_SIG_SCHEME,
                        TPMT_SYM_DEF, TPMU_HA, TSS2_Exception)
from tpm2_pytss.utils import NVReadEK, create_ek_template  # noqa: E402

from ztfl.attestation.binding import qualifying_data  # noqa: E402
from ztfl.attestation.errors import TpmError, TpmStateMismatch  # noqa: E402
from ztfl.attestation.ima import ImaCursor  # noqa: E402
from ztfl.attestation.keys import public_bytes_to_pem  # noqa: E402
from ztfl.attestation.messages import (ActivationResponse, AttestationReceipt, EnrolmentChallenge,  # noqa: E402
                                       EnrolmentRequest, QuoteEvidence)
from ztfl.attestation.tpm_wire import (HASH_ALGS, PcrSelection, parse_quote_attest, parse_signature,  # noqa: E402
                                       pcr_composite_digest)

DEFAULT_AK_HANDLE = 0x81010020
DEFAULT_PCR = 23
DEFAULT_EK_TYPE = "EK-RSA2048"     # the EK most TPMs (and swtpm_setup) certify
BOOT_EVENT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements"
LEGACY_SELECTION = "sha256:23"
# With IMA: the boot PCRs, IMA's PCR and the application measurement. A gateway judges the PCRs
# of its policy and ignores the others (PCR 23 alone on one without a runtime policy).
MEASURED_SELECTION = "sha256:0,1,2,3,4,5,6,7,10,23"


def read_boot_log(path: str | Path = BOOT_EVENT_LOG) -> bytes:
    """The firmware's TCG2 event log as the kernel exposes it, or b"" on boards without one."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""
PERSISTENT_FIRST = 0x81000000

AK_ATTRIBUTES = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM
                 | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH)


def ak_template() -> TPM2B_PUBLIC:
    return TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256:null", nameAlg=TPM2_ALG.SHA256,
                              objectAttributes=AK_ATTRIBUTES)


class TpmAttestor:
    def __init__(self, tcti: str, state_dir: str | Path, ak_handle: int = DEFAULT_AK_HANDLE,
                 pcr_index: int = DEFAULT_PCR, ek_type: str = DEFAULT_EK_TYPE):
        self.tcti = tcti
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ak_handle = ak_handle
        self.pcr_index = pcr_index
        self.ek_type = ek_type
        try:
            self.esapi = ESAPI(tcti)
        except TSS2_Exception as exc:
            raise TpmError(f"cannot open TPM through TCTI {tcti!r}: {exc}") from None
        self._ak_tr = None
        self._ak_public: bytes | None = None
        self.selection = LEGACY_SELECTION
        self.boot_log = b""
        self.ima: ImaCursor | None = None

    @classmethod
    def from_config(cls, doc: dict) -> "TpmAttestor":
        """From the `attestation.yaml` that `ztfl provision` writes (tcti, state_dir, pcr,
        ak_handle, ek_type); a bad or unknown key raises ValueError naming it."""
        if not isinstance(doc, dict):
            raise ValueError("attestation config must be a mapping")
        unknown = set(doc) - {"tcti", "state_dir", "pcr", "ak_handle", "ek_type"}
        if unknown:
            raise ValueError(f"attestation config: unknown key '{sorted(unknown)[0]}'")
        for key in ("tcti", "state_dir"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise ValueError(f"attestation config: key '{key}' must be a non-empty string")
        pcr = doc.get("pcr", DEFAULT_PCR)
        if isinstance(pcr, bool) or not isinstance(pcr, int) or not 0 <= pcr <= 23:
            raise ValueError("attestation config: key 'pcr' must be a PCR index 0..23")
        handle = doc.get("ak_handle", DEFAULT_AK_HANDLE)
        try:
            handle = int(handle, 0) if isinstance(handle, str) else int(handle)
        except ValueError:
            raise ValueError("attestation config: key 'ak_handle' must be a number like 0x81010020") from None
        if not PERSISTENT_FIRST <= handle <= 0x81FFFFFF:
            raise ValueError("attestation config: key 'ak_handle' must be a persistent handle 0x81xxxxxx")
        ek_type = doc.get("ek_type", DEFAULT_EK_TYPE)
        if ek_type not in ("EK-RSA2048", "EK-ECC256"):
            raise ValueError("attestation config: key 'ek_type' must be EK-RSA2048 or EK-ECC256")
        return cls(doc["tcti"], doc["state_dir"], ak_handle=handle, pcr_index=pcr, ek_type=ek_type)

    # --- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        if self.esapi is not None:
            self.esapi.close()
            self.esapi = None

    def __enter__(self) -> "TpmAttestor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the AK -------------------------------------------------------------------------------
    @property
    def _ak_pub_path(self) -> Path:
        return self.state_dir / "ak.pub"

    def _persistent_handles(self) -> set[int]:
        handles: set[int] = set()
        more, start = True, PERSISTENT_FIRST
        while more:
            more, data = self.esapi.get_capability(TPM2_CAP.HANDLES, start, 64)
            page = [int(h) for h in data.data.handles]
            handles.update(page)
            if not page:
                break
            start = page[-1] + 1
        return handles

    def ensure_ak(self) -> bytes:
        """Load the persistent AK, creating it on first use; returns its TPM2B_PUBLIC bytes."""
        if self._ak_public is not None:
            return self._ak_public
        recorded = self._ak_pub_path.read_bytes() if self._ak_pub_path.exists() else None
        try:
            if self.ak_handle in self._persistent_handles():
                tr = self.esapi.tr_from_tpmpublic(self.ak_handle)
                public, _, _ = self.esapi.read_public(tr)
                current = bytes(public.marshal())
                if recorded is not None and recorded != current:
                    raise TpmStateMismatch(f"handle 0x{self.ak_handle:08x} holds another key than the AK "
                                           f"recorded in {self._ak_pub_path}")
                if public.publicArea.objectAttributes & (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT) \
                        != (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT):
                    raise TpmStateMismatch(f"handle 0x{self.ak_handle:08x} is not a restricted signing key")
            else:
                transient, public, _, _, _ = self.esapi.create_primary(
                    TPM2B_SENSITIVE_CREATE(), ak_template(), ESYS_TR.ENDORSEMENT)
                try:
                    tr = self.esapi.evict_control(ESYS_TR.OWNER, transient, self.ak_handle)
                finally:
                    self.esapi.flush_context(transient)
                current = bytes(public.marshal())
                # A new AK invalidates any earlier enrolment.
                (self.state_dir / "enrolled").unlink(missing_ok=True)
        except TSS2_Exception as exc:
            raise TpmError(f"creating or loading the AK at 0x{self.ak_handle:08x}: {exc}") from None
        self._ak_pub_path.write_bytes(current)
        self._ak_tr = tr
        self._ak_public = current
        return current

    def ak_pem(self) -> bytes:
        return public_bytes_to_pem(self.ensure_ak())

    def evict_ak(self) -> None:
        """Remove the persistent AK (decommissioning, or tests)."""
        self.ensure_ak()
        try:
            self.esapi.evict_control(ESYS_TR.OWNER, self._ak_tr, self.ak_handle)
        except TSS2_Exception as exc:
            raise TpmError(f"evicting the AK: {exc}") from None
        self._ak_tr, self._ak_public = None, None
        self._ak_pub_path.unlink(missing_ok=True)
        (self.state_dir / "enrolled").unlink(missing_ok=True)

    # --- the EK and enrolment -----------------------------------------------------------------
    def _create_ek(self):
        cert, template = create_ek_template(self.ek_type, NVReadEK(self.esapi))
        handle, public, _, _, _ = self.esapi.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT)
        return handle, public, cert or b""

    def enrolment_request(self, agent_id: str, profile: str) -> EnrolmentRequest:
        ak_public = self.ensure_ak()
        try:
            ek, ek_public, cert = self._create_ek()
            self.esapi.flush_context(ek)
        except TSS2_Exception as exc:
            raise TpmError(f"creating the EK: {exc}") from None
        return EnrolmentRequest(agent_id, profile, bytes(ek_public.marshal()), ak_public, bytes(cert))

    def activate(self, agent_id: str, challenge: EnrolmentChallenge) -> ActivationResponse:
        """ActivateCredential: recover the gateway's secret (works only in the TPM holding both keys)."""
        self.ensure_ak()
        try:
            blob, _ = TPM2B_ID_OBJECT.unmarshal(challenge.credential_blob)
            encrypted, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(challenge.encrypted_secret)
        except (TSS2_Exception, ValueError) as exc:
            raise TpmError(f"malformed enrolment challenge: {exc}") from None
        ek = session = None
        try:
            ek, _, _ = self._create_ek()
            # The EK's authorisation policy is PolicySecret(TPM_RH_ENDORSEMENT).
            session = self.esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                                    TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
            self.esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
            secret = self.esapi.activate_credential(self._ak_tr, ek, blob, encrypted,
                                                    session1=ESYS_TR.PASSWORD, session2=session)
        except TSS2_Exception as exc:
            raise TpmError(f"ActivateCredential failed (challenge not made for this TPM's EK and AK): {exc}") from None
        finally:
            for handle in (session, ek):
                if handle is not None:
                    self.esapi.flush_context(handle)
        (self.state_dir / "enrolled").write_text(json.dumps({"agent_id": agent_id, "at": time.time()}))
        return ActivationResponse(agent_id, bytes(secret))

    # --- measurement --------------------------------------------------------------------------
    def extend_measurement(self, measurement: bytes, reset: bool = True) -> None:
        """PCR_Event(pcr_index, measurement): every bank b becomes H_b(old || H_b(measurement)).
        With reset (PCR 16 and 23 are resettable at locality 0) the value after start is
        reproducible: attestation.measure.expected_pcr(measurement)."""
        if not 0 < len(measurement) <= 1024:
            raise ValueError("a measurement is 1..1024 bytes")
        pcr = getattr(ESYS_TR, f"PCR{self.pcr_index}")
        try:
            if reset:
                self.esapi.pcr_reset(pcr)
            self.esapi.pcr_event(pcr, measurement)
        except TSS2_Exception as exc:
            raise TpmError(f"extending PCR {self.pcr_index}: {exc}") from None

    def extend_pcr(self, index: int, digests: dict[str, bytes]) -> None:
        """PCR_Extend(index) with one digest per bank ({"sha1": ..., "sha256": ...}), as firmware
        and the kernel extend their measurements (tests drive a TPM this way with real logs)."""
        values = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=HASH_ALGS[bank], digest=TPMU_HA(**{bank: d}))
                                     for bank, d in digests.items()])
        try:
            self.esapi.pcr_extend(getattr(ESYS_TR, f"PCR{index}"), values)
        except TSS2_Exception as exc:
            raise TpmError(f"extending PCR {index}: {exc}") from None

    def use_kernel_measurements(self, ima_list: str | Path | None = None,
                                boot_log: str | Path = BOOT_EVENT_LOG) -> bool:
        """Quote PCRs 0-7, 10 and 23 with the boot event log and the IMA list, where the kernel
        keeps an IMA list; elsewhere quotes stay as they were (PCR 23 alone). True if enabled."""
        cursor = ImaCursor(ima_list) if ima_list is not None else ImaCursor()
        if not ImaCursor.available(cursor.path):
            return False
        self.ima, self.boot_log, self.selection = cursor, read_boot_log(boot_log), MEASURED_SELECTION
        return True

    def acknowledge(self, receipt: AttestationReceipt) -> None:
        """The gateway's receipt: the next quote sends the IMA entries after those it holds."""
        if self.ima is not None:
            self.ima.acknowledge(receipt.ima_accepted)

    def read_pcrs(self, selection: PcrSelection) -> tuple[bytes, ...]:
        wanted = list(selection.pcrs)
        values: list[bytes] = []
        try:
            while wanted:
                # PCR_Read returns at most 8 digests per call: ask again for the rest.
                sel = TPML_PCR_SELECTION.parse(str(PcrSelection(selection.hash_alg, tuple(wanted))))
                _, got_sel, digests = self.esapi.pcr_read(sel)
                got = [d for d in digests]
                if not got:
                    raise TpmError(f"TPM returned no value for PCRs {wanted} of {selection}")
                values.extend(bytes(d) for d in got)
                wanted = wanted[len(got):]
        except TSS2_Exception as exc:
            raise TpmError(f"reading PCRs {selection}: {exc}") from None
        return tuple(values)

    # --- quotes -------------------------------------------------------------------------------
    def quote(self, nonce: bytes, round_id: int, public_keys: bytes,
              selection: PcrSelection | str | None = None, attempts: int = 3,
              boot_log: bytes | None = None, ima: ImaCursor | None = None) -> QuoteEvidence:
        """TPM2_Quote over `selection` with qualifying data H(nonce || round || public keys), with
        the boot event log and, read after the quote, the IMA entries past the gateway's receipt
        (the list may run ahead of the quoted PCR 10: the gateway replays to the quoted prefix).
        Left out, selection and logs are this attestor's (use_kernel_measurements)."""
        selection = self.selection if selection is None else selection
        boot_log = self.boot_log if boot_log is None else boot_log
        ima = self.ima if ima is None else ima
        if isinstance(selection, str):
            selection = PcrSelection.parse(selection)
        self.ensure_ak()
        extra = qualifying_data(nonce, round_id, public_keys)
        tpml = TPML_PCR_SELECTION.parse(str(selection))
        for _ in range(attempts):
            try:
                attest, signature = self.esapi.quote(self._ak_tr, tpml, TPM2B_DATA(extra),
                                                     TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
            except TSS2_Exception as exc:
                raise TpmError(f"TPM2_Quote: {exc}") from None
            evidence = QuoteEvidence(round_id, bytes(nonce), bytes(attest), bytes(signature.marshal()),
                                     self.read_pcrs(selection))
            # A PCR extended between quote and read would make the values disagree: quote again.
            parsed = parse_quote_attest(evidence.attest)
            sig_hash = parse_signature(evidence.signature).hash_alg
            if pcr_composite_digest(sig_hash, evidence.pcr_values) == parsed.pcr_digest:
                if boot_log or ima is not None:
                    offset, entries = ima.pending() if ima is not None else (0, b"")
                    evidence = replace(evidence, boot_log=boot_log, ima_offset=offset, ima_entries=entries)
                return evidence
        raise TpmError(f"PCRs {selection} kept changing while quoting")
