"""The runtime policy: which files an agent may have loaded, by IMA file digest, signed by the
fleet's release key. The gateway judges each IMA entry against it.

Document (JSON), signed as a whole:

    {"policy": {"format": "ztfl-runtime-policy/1", "release": "0.1.0", "hash": "sha256",
                "files":   {"/opt/ztfl/.venv/lib/python3.11/site-packages/nacl/signing.py": ["<hex>"], ...},
                "exclude": ["/var/lib/ztfl/agent/state"],          # path prefixes not judged (data)
                "models":  ["/var/lib/ztfl/agent/detector-v*.int8.onnx"]},   # must be a model the
                                                                   # gateway distributed
     "signature": {"alg": "ed25519" | "ecdsa-sha256" | "ecdsa-sha384", "key": "<SHA-256 of the
                   public key, DER SubjectPublicKeyInfo>", "value": "<base64>"}}

The signature covers the canonical JSON of "policy" (sorted keys, no spaces, ASCII). Paths are
real paths (symbolic links resolved), as IMA records them.
"""
from __future__ import annotations

import base64
import compileall
import fnmatch
import hashlib
import importlib.util
import json
import py_compile
import sys
import sysconfig
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ztfl.attestation.errors import (BootAggregateMismatch, ImaFileHashAlgorithm, ImaViolation, ModelNotDistributed,
                                     RuntimeFileChanged, RuntimePolicyError, UnknownRuntimeFile)
from ztfl.attestation.ima import BOOT_AGGREGATE, FILE_HASHES, ImaEntry

FORMAT = "ztfl-runtime-policy/1"
MAX_POLICY_BYTES = 256 << 20
# Every ztfl subpackage: the agent process starts from the `ztfl` command and loads most of them.
RELEASE_PACKAGES = ("protocol", "fednet", "attestation", "models", "privacy", "robustness", "hw_profiles",
                    "config", "agent", "gateway", "services", "bench", "firmware_tools")


@dataclass(frozen=True)
class RuntimePolicy:
    files: Mapping[str, frozenset[bytes]]
    hash_alg: str = "sha256"
    exclude: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    release: str = ""

    def __post_init__(self):
        if self.hash_alg not in FILE_HASHES:
            raise RuntimePolicyError(f"runtime policy: hash {self.hash_alg!r} is not one of {sorted(FILE_HASHES)}")
        size = FILE_HASHES[self.hash_alg]
        for path, digests in self.files.items():
            if not path.startswith("/") or any(len(d) != size for d in digests):
                raise RuntimePolicyError(f"runtime policy: {path!r} is not an absolute path with "
                                         f"{self.hash_alg} digests")
        if any(not p.startswith("/") for p in self.exclude + self.models):
            raise RuntimePolicyError("runtime policy: exclude and models take absolute paths")

    # --- judging IMA entries -------------------------------------------------------------------
    def check(self, entries: Iterable[ImaEntry], first_index: int, model_digests: Set[bytes],
              expected_boot_aggregate: Callable[[str], bytes | None] = lambda alg: None) -> None:
        """Raise for the first entry the policy refuses. Entry `first_index` is the list's first
        when 0, the only place a boot_aggregate may stand."""
        for index, entry in enumerate(entries, first_index):
            where = f"IMA entry {index}"
            if entry.violation:
                raise ImaViolation(f"{where}: IMA recorded a violation on {entry.path}")
            if index == 0 and entry.path == BOOT_AGGREGATE:
                expected = expected_boot_aggregate(entry.file_hash_alg)
                if expected is not None and entry.file_digest != expected:
                    raise BootAggregateMismatch(f"{where}: boot_aggregate is not the hash of the boot log's "
                                                "replayed PCRs")
                continue
            if entry.file_hash_alg != self.hash_alg:
                raise ImaFileHashAlgorithm(f"{where}: {entry.path} measured with {entry.file_hash_alg}, the "
                                           f"runtime policy uses {self.hash_alg}")
            if any(entry.path.startswith(prefix) for prefix in self.exclude):
                continue
            if any(fnmatch.fnmatchcase(entry.path, pattern) for pattern in self.models):
                if entry.file_digest not in model_digests:
                    raise ModelNotDistributed(f"{where}: model {entry.path} ({entry.file_digest.hex()[:16]}...) "
                                              "is not a version this gateway distributed")
                continue
            allowed = self.files.get(entry.path)
            if allowed is None:
                raise UnknownRuntimeFile(f"{where}: {entry.path} is not in the runtime policy")
            if entry.file_digest not in allowed:
                raise RuntimeFileChanged(f"{where}: {entry.path} has digest {entry.file_digest.hex()[:16]}..., "
                                         "not the released one")

    # --- the document ------------------------------------------------------------------------
    def to_document(self) -> dict:
        return {"format": FORMAT, "release": self.release, "hash": self.hash_alg,
                "files": {p: sorted(d.hex() for d in ds) for p, ds in sorted(self.files.items())},
                "exclude": list(self.exclude), "models": list(self.models)}

    @classmethod
    def from_document(cls, doc) -> "RuntimePolicy":
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise RuntimePolicyError(f"runtime policy: not a {FORMAT} document")
        unknown = set(doc) - {"format", "release", "hash", "files", "exclude", "models"}
        if unknown:
            raise RuntimePolicyError(f"runtime policy: unknown key '{sorted(unknown)[0]}'")
        files, exclude, models = doc.get("files", {}), doc.get("exclude", []), doc.get("models", [])
        if not isinstance(files, dict) or not all(isinstance(v, list) for v in files.values()):
            raise RuntimePolicyError("runtime policy: files must map paths to lists of hex digests")
        if not all(isinstance(x, list) and all(isinstance(p, str) for p in x) for x in (exclude, models)):
            raise RuntimePolicyError("runtime policy: exclude and models must be lists of paths")
        try:
            parsed = {str(p): frozenset(bytes.fromhex(d) for d in ds) for p, ds in files.items()}
        except (TypeError, ValueError):
            raise RuntimePolicyError("runtime policy: a file digest is not hex") from None
        return cls(parsed, str(doc.get("hash", "sha256")), tuple(exclude), tuple(models), str(doc.get("release", "")))


# --- signing ---------------------------------------------------------------------------------------

def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def key_id(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _ecdsa_hash(curve: ec.EllipticCurve):
    return hashes.SHA384() if curve.key_size > 256 else hashes.SHA256()


def sign_policy(policy: RuntimePolicy, private_key_pem: bytes) -> bytes:
    """The signed document (JSON bytes). The key is an Ed25519 or EC private key in PEM."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise RuntimePolicyError(f"signing key: {exc}") from None
    body = policy.to_document()
    message = canonical(body)
    if isinstance(key, Ed25519PrivateKey):
        alg, value = "ed25519", key.sign(message)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        digest = _ecdsa_hash(key.curve)
        alg, value = f"ecdsa-{digest.name}", key.sign(message, ec.ECDSA(digest))
    else:
        raise RuntimePolicyError("signing key: expected an Ed25519 or EC private key")
    signature = {"alg": alg, "key": key_id(key.public_key()), "value": base64.b64encode(value).decode("ascii")}
    return json.dumps({"policy": body, "signature": signature}, indent=1, sort_keys=True).encode("utf-8") + b"\n"


def load_public_key(pem: bytes):
    """An Ed25519 or EC public key from a PEM public key or a PEM certificate holding one."""
    try:
        if b"BEGIN CERTIFICATE" in pem:
            from cryptography import x509
            key = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise RuntimePolicyError(f"verification key: {exc}") from None
    if not isinstance(key, (Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise RuntimePolicyError("verification key: expected an Ed25519 or EC public key")
    return key


def verify_signed_policy(document: bytes, public_key_pem: bytes) -> RuntimePolicy:
    """The policy of a signed document, or RuntimePolicyError if it is malformed or not signed by
    exactly this key."""
    doc = _signed_document(document)
    key = load_public_key(public_key_pem)
    sig = doc["signature"]
    if sig.get("key") != key_id(key):
        raise RuntimePolicyError("runtime policy: signed by another key than the one given")
    try:
        value = base64.b64decode(str(sig.get("value", "")), validate=True)
        message = canonical(doc["policy"])
        if isinstance(key, Ed25519PublicKey) and sig.get("alg") == "ed25519":
            key.verify(value, message)
        elif isinstance(key, ec.EllipticCurvePublicKey) and sig.get("alg") == f"ecdsa-{_ecdsa_hash(key.curve).name}":
            key.verify(value, message, ec.ECDSA(_ecdsa_hash(key.curve)))
        else:
            raise RuntimePolicyError(f"runtime policy: signature algorithm {sig.get('alg')!r} does not fit the key")
    except (InvalidSignature, ValueError, TypeError):
        raise RuntimePolicyError("runtime policy: the signature does not verify") from None
    return RuntimePolicy.from_document(doc["policy"])


def _signed_document(document: bytes) -> dict:
    try:
        doc = json.loads(document) if len(document) <= MAX_POLICY_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RuntimePolicyError(f"runtime policy: not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"policy", "signature"} or not isinstance(doc["signature"], dict):
        raise RuntimePolicyError(f"runtime policy: expected {{policy, signature}} in at most {MAX_POLICY_BYTES} bytes")
    return doc


def load_signed_policy(path: str | Path, public_key_path: str | Path) -> RuntimePolicy:
    try:
        return verify_signed_policy(Path(path).read_bytes(), Path(public_key_path).read_bytes())
    except OSError as exc:
        raise RuntimePolicyError(f"runtime policy: {exc}") from None


# --- building from a release ---------------------------------------------------------------------

@dataclass
class ReleaseScan:
    """The files of a release as IMA will name them: real path -> digest."""

    hash_alg: str = "sha256"
    files: dict[str, bytes] = field(default_factory=dict)

    def add(self, root: str | Path) -> None:
        root = Path(root)
        if root.is_file():
            self._add_file(root)
            return
        if not root.is_dir():
            raise RuntimePolicyError(f"release path {root} does not exist")
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self._add_file(path)

    def _add_file(self, path: Path) -> None:
        real = path.resolve()
        if str(real) not in self.files:
            h = hashlib.new(self.hash_alg)
            with open(real, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self.files[str(real)] = h.digest()

    def policy(self, exclude: Iterable[str] = (), models: Iterable[str] = (), release: str = "") -> RuntimePolicy:
        return RuntimePolicy({p: frozenset({d}) for p, d in self.files.items()}, self.hash_alg,
                             tuple(exclude), tuple(models), release)


def project_dirs() -> list[Path]:
    """The folders of the installed ztfl packages (site-packages/ztfl/..., or the source tree of
    an editable install), found without importing them."""
    dirs = []
    for name in ("ztfl",) + tuple(f"ztfl.{p}" for p in RELEASE_PACKAGES):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs += [Path(d) for d in spec.submodule_search_locations]
    return dirs


def release_roots() -> list[Path]:
    """What an agent of this installation loads: the interpreter, the standard library, the
    installed packages and the project's own packages (with their data files and bytecode)."""
    paths = sysconfig.get_paths()
    roots = [Path(sys.executable).resolve()] + [Path(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    roots += project_dirs()
    unique: list[Path] = []
    for root in roots:
        if root.exists() and root not in unique:
            unique.append(root)
    return unique


def compile_bytecode(dirs: Iterable[str | Path]) -> None:
    """Compile every module to checked-hash .pyc files: their bytes depend on the source only (not
    on its mtime), so every device installing the release holds the same bytecode as the policy."""
    for d in dirs:
        if Path(d).is_dir():
            compileall.compile_dir(str(d), quiet=1, force=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
