"""Adapters: the imperative shell that executes the core's commands.

SSH and containers, etcd, Vault and the Kubernetes API. Installed under the
import name ``cke_adapters`` (docs/adr/0002-adapters-packaging.md).
"""
