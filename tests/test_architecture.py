"""The import rule of docs/architecture.md, enforced: every import in the project's installed code
goes down the layers (or stays inside its own package), no package imports another in a cycle,
nothing imports a bare top-level name such as `models` or `protocol`, and protocol/ stays pure.

The rule is checked on the source (every `import` statement, also those inside functions), so a
lazy import cannot hide an upward edge.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Installed package -> folder (as setup.py maps them). Modules directly in ztfl/ are the top layer.
FOLDERS = {
    "protocol": "protocol", "fednet": "fednet", "attestation": "attestation", "models": "models",
    "privacy": "privacy", "robustness": "robustness", "hw_profiles": "hw_profiles", "config": "config",
    "agent": "agent", "gateway": "gateway", "services": "services", "bench": "bench",
    "firmware_tools": "firmware/tools", "ztfl": "ztfl",
}

# Lowest first. A package may import packages of lower layers, and packages of its own layer only
# where docs/architecture.md allows it (SAME_LAYER); never anything above.
LAYERS = [
    {"protocol"},
    {"hw_profiles", "config", "models", "privacy", "robustness", "attestation", "fednet"},
    {"agent", "gateway"},
    {"services"},
    {"firmware_tools", "bench"},
    {"ztfl"},
]
SAME_LAYER = {
    ("attestation", "hw_profiles"),      # the provisioning output names each device's board profile
    ("fednet", "models"),                # announcements carry the preprocessing pipeline
    ("fednet", "privacy"),               # ... and the DP parameters
    ("fednet", "config"),                # transport settings are typed like every config section
    ("models", "config"), ("privacy", "config"), ("attestation", "config"),
    ("robustness", "config"), ("hw_profiles", "config"),
    ("bench", "firmware_tools"),         # the firmware bench runs the bundle the firmware tools build
}
LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
BARE_NAMES = set(FOLDERS) - {"ztfl"}

# protocol/ is maths, state machines and wire formats: no clock, files, processes or network.
IMPURE = {"time", "socket", "pathlib", "sys", "argparse", "logging", "subprocess", "threading", "io",
          "shutil", "tempfile", "select", "signal", "asyncio", "urllib", "http", "paho", "yaml"}


def package_files() -> dict[str, list[Path]]:
    out = {}
    for pkg, folder in FOLDERS.items():
        root = REPO / folder
        if pkg == "ztfl":
            out[pkg] = sorted(root.glob("*.py"))
        elif root.is_dir():
            out[pkg] = sorted(root.rglob("*.py"))
    return out


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "ztfl":          # from ztfl import bench
                found += [(node.lineno, f"ztfl.{alias.name}") for alias in node.names]
    return found


def target_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ztfl":
        return None
    if len(parts) == 1 or parts[1] not in FOLDERS or parts[1] == "ztfl":
        return "ztfl"
    return parts[1]


def edges() -> dict[tuple[str, str], list[str]]:
    found = defaultdict(list)
    for pkg, files in package_files().items():
        for path in files:
            for line, module in imports_of(path):
                target = target_package(module)
                if target and target != pkg:
                    found[(pkg, target)].append(f"{rel(path)}:{line} imports {module}")
    return found


def rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def test_every_installed_package_has_a_layer():
    for pkg in FOLDERS:
        assert pkg in LAYER_OF, f"{pkg} has no layer in docs/architecture.md's table"


def test_no_import_runs_upward_or_sideways_without_leave():
    bad = []
    for (src, dst), where in sorted(edges().items()):
        if LAYER_OF[dst] > LAYER_OF[src]:
            bad += [f"upward ({src} -> {dst}): {w}" for w in where]
        elif LAYER_OF[dst] == LAYER_OF[src] and (src, dst) not in SAME_LAYER:
            bad += [f"same layer without leave ({src} -> {dst}): {w}" for w in where]
    assert not bad, "\n".join(bad)


def test_agent_and_gateway_never_import_each_other():
    both = {k: v for k, v in edges().items() if set(k) == {"agent", "gateway"}}
    assert not both, both


def test_no_package_imports_another_in_a_cycle():
    graph = defaultdict(set)
    for src, dst in edges():
        graph[src].add(dst)
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [])


def test_nothing_imports_a_bare_top_level_name():
    bad = []
    roots = [*package_files().values(), sorted((REPO / "tests").rglob("*.py"))]
    for files in roots:
        for path in files:
            for line, module in imports_of(path):
                if module.split(".")[0] in BARE_NAMES:
                    bad.append(f"{rel(path)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_library_packages_never_import_the_cli_or_the_service_launchers():
    bad = []
    for (src, dst), where in edges().items():
        if LAYER_OF[src] <= LAYER_OF["gateway"] and dst in ("ztfl", "services", "bench"):
            bad += where
    assert not bad, "\n".join(bad)


def test_protocol_is_pure():
    bad = []
    for path in package_files()["protocol"]:
        for line, module in imports_of(path):
            if module.split(".")[0] in IMPURE:
                bad.append(f"{rel(path)}:{line} imports {module}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("open", "print",
                                                                                                  "input"):
                bad.append(f"{rel(path)}:{node.lineno} calls {node.func.id}()")
    assert not bad, "\n".join(bad)


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a models/ module importing the gateway is reported."""
    fake = tmp_path / "models"
    fake.mkdir()
    (fake / "leak.py").write_text("from ztfl.gateway.server import Gateway\n")
    monkeypatch.setitem(FOLDERS, "models", str(fake))
    found = edges()
    assert ("models", "gateway") in found
    assert LAYER_OF["gateway"] > LAYER_OF["models"]
