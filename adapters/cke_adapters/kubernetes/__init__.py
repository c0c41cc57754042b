"""The Kubernetes API as the engine uses it (``cke_adapters.ports.KubernetesPort``).

``standin.StandInKubernetes`` stands in for the API where no kube-apiserver can
run (labs, tests); a client of a real API server implements the same port.
"""

from cke_adapters.kubernetes.standin import (
    KubernetesAPIError,
    StandInKubernetes,
    StandInStateError,
)

__all__ = ["KubernetesAPIError", "StandInKubernetes", "StandInStateError"]
