"""Runtime measurements: the IMA binary list (ima-ng) parsed and replayed against PCR 10 of a
software TPM extended as the kernel extends it (sha1 and sha256 banks), cross-checked against
keylime's IMA verifier on the same lists; the signed runtime policy and how it is built."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from measured_kit import REPO, SimulatedKernel, keylime_available, keylime_verify
from ztfl.attestation import errors
from ztfl.attestation.ima import (ImaCursor, ImaReplayBook, ascii_line, boot_aggregate, encode_ima_entry,
                                  entry_sizes, parse_ima_log, quoted_prefix, replay_ima)
from ztfl.attestation.runtime_policy import (ReleaseScan, RuntimePolicy, compile_bytecode, sign_policy,
                                             verify_signed_policy)
from ztfl.attestation.tpm_agent import TpmAttestor
from ztfl.attestation.tpm_wire import PcrSelection

needs_keylime = pytest.mark.skipif(not keylime_available(),
                                   reason="no .venv-keylime (`make keylime-venv` creates it; `make test` does)")


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def sample_list(n: int = 20) -> bytes:
    entries = [encode_ima_entry("boot_aggregate", digest("pcrs"))]
    entries += [encode_ima_entry(f"/opt/ztfl/lib/mod{i}.py", digest(f"mod{i}")) for i in range(n)]
    entries.append(encode_ima_entry("/opt/ztfl/sig", digest("sig"), template="ima-sig"))   # unsigned file
    return b"".join(entries)


def pem(key) -> tuple[bytes, bytes]:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


# --- format --------------------------------------------------------------------------------------

def test_entries_parse_with_their_fields():
    entries = parse_ima_log(sample_list(3))
    assert [e.path for e in entries] == ["boot_aggregate", "/opt/ztfl/lib/mod0.py", "/opt/ztfl/lib/mod1.py",
                                         "/opt/ztfl/lib/mod2.py", "/opt/ztfl/sig"]
    assert entries[1].file_hash_alg == "sha256" and entries[1].file_digest == digest("mod0")
    assert entries[-1].template == "ima-sig" and all(e.pcr == 10 for e in entries)
    assert entry_sizes(sample_list(3)) == [len(encode_ima_entry(e.path, e.file_digest)) for e in entries[:4]] + [
        len(sample_list(3)) - sum(len(encode_ima_entry(e.path, e.file_digest)) for e in entries[:4])]
    assert ascii_line(entries[1]) == (f"10 {entries[1].template_digest.hex()} ima-ng "
                                      f"sha256:{digest('mod0').hex()} /opt/ztfl/lib/mod0.py")


def test_forged_file_digest_with_the_old_template_digest_is_refused():
    raw = bytearray(encode_ima_entry("/opt/ztfl/agent/update.py", digest("released")))
    raw[-40] ^= 1                 # one bit of the file digest, template digest left as logged
    with pytest.raises(errors.ImaTemplateHashMismatch, match="update.py"):
        parse_ima_log(bytes(raw))


def test_every_truncation_and_corruption_is_refused_typed():
    data = sample_list(4)
    ends = set()
    pos = 0
    for size in entry_sizes(data):
        pos += size
        ends.add(pos)
    for cut in range(1, len(data)):
        if cut in ends:
            continue
        with pytest.raises(errors.ImaLogFormatError):
            parse_ima_log(data[:cut])
    for i in range(len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 0x40
        try:
            parse_ima_log(bytes(corrupt))
        except (errors.ImaLogFormatError, errors.ImaTemplateHashMismatch):
            pass


def test_unsupported_templates_and_fields_are_refused():
    legacy = encode_ima_entry("/x", digest("x")).replace(b"ima-ng", b"imaxng")
    with pytest.raises(errors.ImaLogFormatError, match="template 'imaxng'"):
        parse_ima_log(legacy)
    bad_alg = encode_ima_entry("/x", bytes(20), hash_alg="sha1").replace(b"sha1:", b"sha7:")
    with pytest.raises(errors.ImaLogFormatError, match="d-ng"):
        parse_ima_log(bad_alg)


# --- replay against a TPM, and against keylime ----------------------------------------------------

def test_replay_matches_pcr10_of_a_tpm_in_both_banks(swtpm, tmp_path):
    with TpmAttestor(swtpm.tcti, tmp_path / "agent") as tpm:
        kernel = SimulatedKernel(tpm, tmp_path / "ima")
        kernel.boot(None)
        for e in parse_ima_log(sample_list(30)):
            kernel.record(encode_ima_entry(e.path, e.file_digest))
        kernel.record(encode_ima_entry("/tmp/written-while-read", bytes(32), violation=True))
        entries = parse_ima_log(kernel.list_path.read_bytes())
        for bank in ("sha1", "sha256"):
            pcr10 = tpm.read_pcrs(PcrSelection.parse(f"{bank}:10"))[0]
            assert replay_ima(entries, bank) == pcr10
            assert quoted_prefix(entries, bank, bytes(len(pcr10)), pcr10) == (len(entries), pcr10)
        # boot_aggregate: the kernel's hash of PCRs 0-9 (all zero here: no firmware log).
        assert entries[0].file_digest == boot_aggregate({}, "sha256")


def test_a_list_ahead_of_the_quote_is_judged_up_to_the_quoted_entry():
    entries = parse_ima_log(sample_list(10))
    quoted = replay_ima(entries[:7], "sha256")
    assert quoted_prefix(entries, "sha256", bytes(32), quoted) == (7, quoted)
    with pytest.raises(errors.ImaReplayMismatch):
        quoted_prefix(entries[:6], "sha256", bytes(32), quoted)                  # truncated
    with pytest.raises(errors.ImaReplayMismatch):
        quoted_prefix([entries[1], entries[0]] + entries[2:], "sha256", bytes(32), quoted)   # reordered


@needs_keylime
@pytest.mark.parametrize("bank", ["sha1", "sha256"])
def test_keylime_replays_and_judges_the_same_lists(bank):
    entries = parse_ima_log(sample_list(40))
    lines = [ascii_line(e) for e in entries]
    policy = {e.path: [e.file_digest.hex()] for e in entries}
    pcr10 = replay_ima(entries, bank)
    ours = as_policy(policy)
    verdict = keylime_verify(lines, policy, [], pcr10, bank)
    assert verdict == {"running": pcr10.hex(), "failures": []}
    ours.check(entries[1:], 1, set())
    # A changed file and an unknown file: keylime and ztfl both refuse, each naming the cause.
    changed = dict(policy, **{"/opt/ztfl/lib/mod3.py": [digest("released mod3").hex()]})
    unknown = {p: d for p, d in policy.items() if p != "/opt/ztfl/lib/mod7.py"}
    assert keylime_verify(lines, changed, [], pcr10, bank)["failures"] == ["ima.validation.ima-ng.runtime_policy_hash"]
    assert keylime_verify(lines, unknown, [], pcr10, bank)["failures"] == ["ima.validation.ima-ng.not_in_allowlist"]
    with pytest.raises(errors.RuntimeFileChanged, match="mod3.py"):
        as_policy(changed).check(entries, 0, set())
    with pytest.raises(errors.UnknownRuntimeFile, match="mod7.py"):
        as_policy(unknown).check(entries, 0, set())
    # Excluded paths: neither judges them.
    assert keylime_verify(lines, unknown, ["/opt/ztfl/lib/mod7.py"], pcr10, bank)["failures"] == []
    RuntimePolicy(ours.files, exclude=("/opt/ztfl/lib/mod7",)).check(entries, 0, set())
    # A list cut short of the quote: keylime finds no PCR match, ztfl no quoted prefix.
    assert "ima.pcr_mismatch" in keylime_verify(lines[:-5], policy, [], pcr10, bank)["failures"]
    with pytest.raises(errors.ImaReplayMismatch):
        quoted_prefix(entries[:-5], bank, bytes(len(pcr10)), pcr10)


def as_policy(keylime_digests: dict[str, list[str]]) -> RuntimePolicy:
    """keylime's digests (which list boot_aggregate as a file) as a ztfl runtime policy."""
    return RuntimePolicy({p: frozenset(bytes.fromhex(d) for d in ds) for p, ds in keylime_digests.items() if p[0] == "/"})


# --- incremental state ---------------------------------------------------------------------------

def test_replay_book_keeps_checkpoints_per_agent_and_boot():
    book = ImaReplayBook("sha256", keep=2)
    assert book.start("a", boot=1, offset=0) == bytes(32)
    book.commit("a", 1, 10, b"\x0a" * 32)
    book.commit("a", 1, 20, b"\x14" * 32)
    assert book.start("a", 1, 20) == b"\x14" * 32 and book.start("a", 1, 10) == b"\x0a" * 32
    book.commit("a", 1, 30, b"\x1e" * 32)
    with pytest.raises(errors.ImaLogGap, match="up to 30"):
        book.start("a", 1, 10)                      # older than the checkpoints kept
    with pytest.raises(errors.ImaLogGap):
        book.start("a", 2, 30)                      # the TPM was reset: a new list
    with pytest.raises(errors.ImaLogGap):
        book.start("b", 1, 30)
    assert book.position("a") == 30 and book.position("b") == 0


def test_cursor_sends_what_the_gateway_has_not_acknowledged(tmp_path):
    path = tmp_path / "binary_runtime_measurements"
    data = sample_list(5)
    path.write_bytes(data[:len(data) - 10])                 # the last entry is still being written
    cursor = ImaCursor(path)
    offset, sent = cursor.pending()
    assert offset == 0 and len(parse_ima_log(sent)) == 6
    path.write_bytes(data)
    cursor.acknowledge(4)
    offset, sent = cursor.pending()
    assert offset == 4 and [e.path for e in parse_ima_log(sent, 4)] == [
        "/opt/ztfl/lib/mod3.py", "/opt/ztfl/lib/mod4.py", "/opt/ztfl/sig"]
    cursor.acknowledge(99)                                  # more than it has: ignored
    assert cursor.acknowledged == 4


# --- the signed runtime policy --------------------------------------------------------------------

@pytest.mark.parametrize("make_key", [Ed25519PrivateKey.generate, lambda: ec.generate_private_key(ec.SECP256R1()),
                                      lambda: ec.generate_private_key(ec.SECP384R1())])
def test_signed_policy_verifies_with_its_key_only(make_key):
    policy = RuntimePolicy({"/opt/a.py": frozenset({digest("a")})}, exclude=("/var/lib/ztfl/",),
                           models=("/var/lib/ztfl/agent/detector-v*.int8.onnx",), release="1.2.3")
    private, public = pem(make_key())
    document = sign_policy(policy, private)
    assert verify_signed_policy(document, public) == policy
    _, other = pem(Ed25519PrivateKey.generate())
    with pytest.raises(errors.RuntimePolicyError, match="another key"):
        verify_signed_policy(document, other)
    doc = json.loads(document)
    doc["policy"]["files"]["/opt/evil.py"] = [digest("evil").hex()]
    with pytest.raises(errors.RuntimePolicyError, match="does not verify"):
        verify_signed_policy(json.dumps(doc).encode(), public)
    with pytest.raises(errors.RuntimePolicyError):
        verify_signed_policy(b"{not json", public)


def test_release_scan_records_real_paths_and_checked_hash_bytecode(tmp_path):
    # The same release installed twice at the same place, at other times: the same bytecode
    # (checked-hash .pyc files record the source's hash, not its mtime).
    tree = tmp_path / "opt" / "privacy"
    scans = []
    for mtime in (1_000_000_000, 1_700_000_000):
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        for src in (REPO / "privacy").glob("*.py"):
            (tree / src.name).write_bytes(src.read_bytes())
            os.utime(tree / src.name, (mtime, mtime))
        compile_bytecode([tree])
        scan = ReleaseScan()
        scan.add(tree)
        scans.append(scan.files)
    assert any(p.endswith(".pyc") for p in scans[0])
    assert scans[0] == scans[1]
    (tmp_path / "link.py").symlink_to(tree / "__init__.py")
    scan = ReleaseScan()
    scan.add(tmp_path / "link.py")
    assert list(scan.files) == [str((tree / "__init__.py").resolve())]


def test_policy_command_signs_a_release_the_gateway_can_load(tmp_path):
    private, public = pem(Ed25519PrivateKey.generate())
    (tmp_path / "key.pem").write_bytes(private)
    (tmp_path / "key.pub").write_bytes(public)
    release = tmp_path / "release"
    release.mkdir()
    (release / "app.py").write_text("print('hi')\n")
    done = subprocess.run([sys.executable, "-m", "ztfl.cli", "attest", "policy", "--no-defaults", "--path", str(release),
                           "--key", str(tmp_path / "key.pem"), "--out", str(tmp_path / "policy.json"),
                           "--exclude", "/var/lib/ztfl/agent/state", "--compile"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    policy = verify_signed_policy((tmp_path / "policy.json").read_bytes(), public)
    assert str((release / "app.py").resolve()) in policy.files
    assert any(p.endswith(".pyc") for p in policy.files)
    assert policy.exclude == ("/var/lib/ztfl/agent/state",) and policy.models
