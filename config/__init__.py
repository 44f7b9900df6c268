"""Typed configuration files (agent.yaml, gateway.yaml, cloud.yaml): one loader, one rigour."""
