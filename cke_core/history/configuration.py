"""The cluster configuration as one aggregate: spec, constraints, user
resources and engine settings, each with its own version.

CKE keeps these under the etcd keys ``cluster``, ``constraints`` and
``resource/<key>`` (§E.1), and the engine settings on its command line. Here
each change is an event, so every decision can say exactly which
configuration it saw: ``versions()`` gives the aggregate version (what
``configuration_at`` folds to) and the version of each part.

Values are stored in their normalised JSON form (``codec.unstructure``): the
spec as the normalised cluster.yml, with every default the engine applies.
Setting a part to the value it already has records nothing (the methods
return ``False``), so a sabakan regeneration that produces the same cluster
does not bump the spec version.

A user resource's revision is CKE's ModRevision of its key: unless the caller
gives one, it is the aggregate version of the event that set the resource,
which increases like an etcd revision.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import attrs

from cke_core.cluster import Cluster
from cke_core.codec import structure, unstructure
from cke_core.constraints import Constraints
from cke_core.frozen import freeze, thaw
from cke_core.history.base import (
    HistoryAggregate,
    HistoryError,
    compact_json,
    event_time,
    fold,
)
from cke_core.history.ids import CLUSTER_CONFIGURATION_ID
from cke_core.render.images import EngineSettings
from cke_core.render.kubernetes import UserResource, order_key

__all__ = [
    "ClusterConfiguration",
    "ConfigurationVersions",
    "configuration_at",
]

T = TypeVar("T")


@attrs.frozen
class ConfigurationVersions:
    """Which configuration a decision saw.

    ``configuration`` is the aggregate version (every part as of then); the
    others count the changes of one part (0: never set).
    """

    configuration: int = 0
    spec: int = 0
    constraints: int = 0
    resources: int = 0
    settings: int = 0


def _typed(doc: Any, cls: type[T], what: str) -> T:
    value, problems, _ = structure(doc, cls)
    if value is None or problems:
        detail = "; ".join(f"{p.path or '.'}: {p.message}" for p in problems)
        raise HistoryError(f"the stored {what} cannot be read back: {detail}")
    return value


class ClusterConfiguration(HistoryAggregate):
    """The configuration singleton (id ``CLUSTER_CONFIGURATION_ID``)."""

    class Created(HistoryAggregate.Created):
        pass

    class SpecSet(HistoryAggregate.Event):
        cluster: dict[str, Any]
        spec_version: int

        def apply(self, aggregate: ClusterConfiguration) -> None:
            aggregate.cluster_doc = self.cluster
            aggregate.spec_version = self.spec_version

    class ConstraintsSet(HistoryAggregate.Event):
        constraints: dict[str, Any]
        constraints_version: int

        def apply(self, aggregate: ClusterConfiguration) -> None:
            aggregate.constraints_doc = self.constraints
            aggregate.constraints_version = self.constraints_version

    class SettingsSet(HistoryAggregate.Event):
        settings: dict[str, Any]
        settings_version: int

        def apply(self, aggregate: ClusterConfiguration) -> None:
            aggregate.settings_doc = self.settings
            aggregate.settings_version = self.settings_version

    class ResourceSet(HistoryAggregate.Event):
        key: str
        revision: int
        manifest: dict[str, Any]
        resources_version: int

        def apply(self, aggregate: ClusterConfiguration) -> None:
            resource = {"revision": self.revision, "manifest": self.manifest}
            aggregate.resource_docs = {**aggregate.resource_docs, self.key: resource}
            aggregate.resources_version = self.resources_version

    class ResourceDeleted(HistoryAggregate.Event):
        key: str
        resources_version: int

        def apply(self, aggregate: ClusterConfiguration) -> None:
            docs = dict(aggregate.resource_docs)
            del docs[self.key]
            aggregate.resource_docs = docs
            aggregate.resources_version = self.resources_version

    def __init__(self) -> None:
        self.cluster_doc: dict[str, Any] | None = None
        self.spec_version = 0
        self.constraints_doc: dict[str, Any] | None = None
        self.constraints_version = 0
        self.settings_doc: dict[str, Any] | None = None
        self.settings_version = 0
        self.resource_docs: dict[str, dict[str, Any]] = {}
        self.resources_version = 0

    @classmethod
    def create(cls, at: datetime.datetime) -> ClusterConfiguration:
        return cls._create(cls.Created, id=CLUSTER_CONFIGURATION_ID, timestamp=event_time(at))

    # --- commands ------------------------------------------------------------------

    def set_spec(self, cluster: Cluster, at: datetime.datetime) -> bool:
        """Set cluster.yml (``ckecli cluster set``, sabakan). False if unchanged."""
        if not isinstance(cluster, Cluster):
            raise HistoryError(f"expected a Cluster, got {type(cluster).__name__}")
        doc = unstructure(cluster)
        if doc == self.cluster_doc:
            return False
        self.trigger_event(
            self.SpecSet,
            timestamp=event_time(at),
            cluster=doc,
            spec_version=self.spec_version + 1,
        )
        return True

    def set_constraints(self, constraints: Constraints, at: datetime.datetime) -> bool:
        """Set the constraints (``ckecli constraints set``). False if unchanged."""
        if not isinstance(constraints, Constraints):
            raise HistoryError(f"expected Constraints, got {type(constraints).__name__}")
        doc = unstructure(constraints)
        if doc == self.constraints_doc:
            return False
        self.trigger_event(
            self.ConstraintsSet,
            timestamp=event_time(at),
            constraints=doc,
            constraints_version=self.constraints_version + 1,
        )
        return True

    def set_settings(self, settings: EngineSettings, at: datetime.datetime) -> bool:
        """Set the engine settings (command line, pinned images). False if unchanged."""
        if not isinstance(settings, EngineSettings):
            raise HistoryError(f"expected EngineSettings, got {type(settings).__name__}")
        if settings.max_concurrent_updates <= 0:
            raise HistoryError("max_concurrent_updates must be > 0")
        doc = unstructure(settings)
        if doc == self.settings_doc:
            return False
        self.trigger_event(
            self.SettingsSet,
            timestamp=event_time(at),
            settings=doc,
            settings_version=self.settings_version + 1,
        )
        return True

    def set_resource(
        self,
        key: str,
        manifest: Mapping[str, Any],
        at: datetime.datetime,
        *,
        revision: int | None = None,
    ) -> bool:
        """Set the user resource ``key`` (``ckecli resource set``).

        ``revision`` defaults to the version of the event (a new, larger
        number). False if the manifest is unchanged and no revision is given.
        """
        if not key or not isinstance(key, str):
            raise HistoryError(f"a resource needs a key, got {key!r}")
        if not isinstance(manifest, Mapping):
            raise HistoryError(f"a resource manifest is a mapping, got {type(manifest).__name__}")
        doc = thaw(manifest)
        current = self.resource_docs.get(key)
        if revision is None:
            if current is not None and current["manifest"] == doc:
                return False
            revision = self.version + 1
        elif isinstance(revision, bool) or not isinstance(revision, int) or revision <= 0:
            raise HistoryError(f"a resource revision is a positive integer, got {revision!r}")
        elif current is not None and current == {"revision": revision, "manifest": doc}:
            return False
        self.trigger_event(
            self.ResourceSet,
            timestamp=event_time(at),
            key=key,
            revision=revision,
            manifest=doc,
            resources_version=self.resources_version + 1,
        )
        return True

    def delete_resource(self, key: str, at: datetime.datetime) -> bool:
        """Delete the user resource ``key``. False if there is none."""
        if key not in self.resource_docs:
            return False
        self.trigger_event(
            self.ResourceDeleted,
            timestamp=event_time(at),
            key=key,
            resources_version=self.resources_version + 1,
        )
        return True

    # --- values ------------------------------------------------------------------------

    def cluster(self) -> Cluster | None:
        """cluster.yml, or None before the first ``set_spec``."""
        if self.cluster_doc is None:
            return None
        return _typed(self.cluster_doc, Cluster, "cluster")

    def constraints(self) -> Constraints | None:
        """The constraints, or None before the first ``set_constraints`` (CKE
        treats missing constraints as an error, §B.0)."""
        if self.constraints_doc is None:
            return None
        return _typed(self.constraints_doc, Constraints, "constraints")

    def settings(self) -> EngineSettings:
        """The engine settings (the defaults before the first ``set_settings``)."""
        if self.settings_doc is None:
            return EngineSettings()
        return _typed(self.settings_doc, EngineSettings, "engine settings")

    def resources(self) -> tuple[UserResource, ...]:
        """The user resources in apply order (rank, then key) — the order the
        engine passes them to ``decide``."""
        found = (
            UserResource(key=key, revision=doc["revision"], document=freeze(doc["manifest"]))
            for key, doc in self.resource_docs.items()
        )
        return tuple(sorted(found, key=order_key))

    def versions(self) -> ConfigurationVersions:
        return ConfigurationVersions(
            configuration=self.version,
            spec=self.spec_version,
            constraints=self.constraints_version,
            resources=self.resources_version,
            settings=self.settings_version,
        )

    def etcd_keys(self) -> dict[str, str]:
        """What CKE would read from its keys (§E.1): ``cluster``, ``constraints``,
        ``resource/<key>`` (the revision is the key's ModRevision, not a value)."""
        keys: dict[str, str] = {}
        if self.cluster_doc is not None:
            keys["cluster"] = compact_json(self.cluster_doc)
        if self.constraints_doc is not None:
            keys["constraints"] = compact_json(self.constraints_doc)
        for key in sorted(self.resource_docs):
            keys[f"resource/{key}"] = compact_json(self.resource_docs[key]["manifest"])
        return keys


def configuration_at(events: Iterable[Any], version: int | None = None) -> ClusterConfiguration:
    """The configuration as of aggregate version ``version`` (the latest when None).

    ``events`` are the aggregate's events in order from its creation, or a
    snapshot followed by the later events. A decision records the version it
    saw (``ConfigurationVersions.configuration``); this rebuilds exactly that.
    """
    return fold(events, ClusterConfiguration, version)
