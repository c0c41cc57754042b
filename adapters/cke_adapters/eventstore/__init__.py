"""Event-store persistence for eventsourcing: etcd recorders and an archive.

``cke_adapters.eventstore.etcd`` is an eventsourcing persistence module
(``PERSISTENCE_MODULE=cke_adapters.eventstore.etcd``); ``archive`` moves old
events out of etcd into SQLite without gaps. See docs/adr/0006-etcd-event-store.md.

Nothing is imported here, so that selecting the persistence module by topic
finds exactly one infrastructure factory.
"""
