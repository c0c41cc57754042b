"""Commands as data (§C.1 and the Kubernetes, etcd, queue and local commands).

``node`` and ``etcd``: over SSH on a node and against the managed etcd;
``kube``: the Kubernetes API; ``queue``: reboot/repair queue entries and
commands run on the engine's host. The shell executes them; the core only
describes them.
"""
