"""Orchestration over the stages, one service per module: the engine (one home opened for use:
ingest, search, erasure, the index kept in step with the catalog), subjects (galleries and
enrolled people) and clusters (unknown identities, with the suggestions of
:mod:`~facesearch.services.cluster_suggestions`). Governance is the only caller that acts for
a user; these services check no role and write no audit record."""
