"""EK certificates: a TPM manufactured by swtpm_setup with a local CA carries an RSA EK
certificate in NV; an enrolment authority that trusts that CA admits it, and refuses a TPM
without a certificate, a certificate from another CA, and a certificate of another EK."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from cryptography import x509

from ztfl.attestation import errors
from ztfl.attestation.enrolment import EnrolmentAuthority
from ztfl.attestation.messages import EnrolmentRequest
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.registry import IdentityRegistry
from ztfl.attestation.tpm_agent import TpmAttestor
from ztfl.services import start_swtpm

POLICY = AttestationPolicy(allowlist={"raspberry-pi-4": {23: frozenset()}})


@pytest.fixture(scope="module")
def manufactured(tmp_path_factory):
    """One TPM state with an EK certificate (swtpm_setup takes seconds: made once, copied per test)."""
    binary, localca = shutil.which("swtpm_setup"), shutil.which("swtpm_localca")
    if binary is None or localca is None:
        pytest.fail("swtpm_setup/swtpm_localca not installed (apt-get install swtpm-tools; make test installs it)")
    root = tmp_path_factory.mktemp("manufactured")
    ca, state = root / "ca", root / "state"
    ca.mkdir(), state.mkdir()
    (root / "localca.conf").write_text(f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\n"
                                       f"issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n")
    (root / "setup.conf").write_text(f"create_certs_tool = {localca}\n"
                                     f"create_certs_tool_config = {root}/localca.conf\n"
                                     "active_pcr_banks = sha256\n")
    subprocess.run([binary, "--tpm2", "--tpmstate", str(state), "--create-ek-cert", "--config",
                    str(root / "setup.conf"), "--overwrite"], check=True, capture_output=True, timeout=120)
    load = lambda name: x509.load_pem_x509_certificate((ca / name).read_bytes())  # noqa: E731
    return state, load("swtpm-localca-rootca-cert.pem"), load("issuercert.pem")


@pytest.fixture
def tpm_with_cert(manufactured, tmp_path):
    state, _, _ = manufactured
    shutil.copytree(state, tmp_path / "tpm")
    tpm = start_swtpm(tmp_path / "tpm")
    yield tpm
    tpm.stop()


def test_ek_certificate_from_a_trusted_ca_is_accepted(manufactured, tpm_with_cert, tmp_path):
    _, root, intermediate = manufactured
    with TpmAttestor(tpm_with_cert.tcti, tmp_path / "agent") as attestor:
        request = attestor.enrolment_request("pi-01", "raspberry-pi-4")
        assert request.ek_certificate, "swtpm_setup wrote no EK certificate"
        authority = EnrolmentAuthority(IdentityRegistry(), POLICY, trusted_ek_cas=[root],
                                       ek_intermediates=[intermediate])
        identity = authority.complete(attestor.activate("pi-01", authority.begin(request)))
    assert identity.active and identity.ek_certificate == request.ek_certificate
    # Trusting the issuing CA itself as the anchor works as well.
    EnrolmentAuthority(IdentityRegistry(), POLICY, trusted_ek_cas=[intermediate]).begin(request)


def test_ek_certificate_from_an_untrusted_ca_is_refused(manufactured, tpm_with_cert, tmp_path):
    _, root, _ = manufactured
    with TpmAttestor(tpm_with_cert.tcti, tmp_path / "agent") as attestor:
        request = attestor.enrolment_request("pi-01", "raspberry-pi-4")
    # Without the intermediate the chain cannot reach the root.
    with pytest.raises(errors.EkCertificateRejected, match="no trusted issuer"):
        EnrolmentAuthority(IdentityRegistry(), POLICY, trusted_ek_cas=[root]).begin(request)


def test_tpm_without_ek_certificate_is_refused_when_one_is_required(manufactured, swtpm, tmp_path):
    _, root, intermediate = manufactured
    authority = EnrolmentAuthority(IdentityRegistry(), POLICY, trusted_ek_cas=[root], ek_intermediates=[intermediate])
    with TpmAttestor(swtpm.tcti, tmp_path / "agent") as attestor:
        with pytest.raises(errors.EkCertificateRejected, match="has none"):
            authority.begin(attestor.enrolment_request("pi-01", "raspberry-pi-4"))


def test_certificate_of_another_ek_is_refused(manufactured, tpm_with_cert, swtpm, tmp_path):
    _, root, intermediate = manufactured
    with TpmAttestor(tpm_with_cert.tcti, tmp_path / "genuine") as genuine:
        certified = genuine.enrolment_request("pi-01", "raspberry-pi-4")
    with TpmAttestor(swtpm.tcti, tmp_path / "other") as other:
        uncertified = other.enrolment_request("pi-02", "raspberry-pi-4")
    # A TPM without a certificate borrows a genuine TPM's certificate.
    borrowed = EnrolmentRequest("pi-02", "raspberry-pi-4", uncertified.ek_public, uncertified.ak_public,
                                certified.ek_certificate)
    authority = EnrolmentAuthority(IdentityRegistry(), POLICY, trusted_ek_cas=[root], ek_intermediates=[intermediate])
    with pytest.raises(errors.EkCertificateRejected, match="another key"):
        authority.begin(borrowed)
