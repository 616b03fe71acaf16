"""Automatic sharding of the clusters among the live replicas of a shard, on Kubernetes
Leases (``coordinator.py`` has the design, ``leases.py`` the Lease operations)."""
