"""Test-and-lab harness: SSH-reachable nodes on one machine (see :mod:`.netns`).

with Lab("/tmp/mylab", nodes=3) as lab:
    pool = SSHPool(FileKeySource(lab.client_key_path), lab.known_hosts_path)
    ...  # lab.addresses == ["10.231.0.11", "10.231.0.12", "10.231.0.13"]
"""

from cke_adapters.lab.netns import Lab, LabError, LabNode, NodeStatus, free_subnet, reap_stale_labs

__all__ = ["Lab", "LabError", "LabNode", "NodeStatus", "free_subnet", "reap_stale_labs"]
