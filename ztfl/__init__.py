"""ztfl: zero-trust federated learning for Industrial IoT."""
__version__ = "0.1.0"
