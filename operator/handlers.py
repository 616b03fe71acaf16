"""Kopf handlers for PediaCluster and ClusterSyncResources (installed as clusterpedia.operator).

This folder deliberately has no ``__init__.py``: ``operator`` is a standard-library module, and a
regular package of that name on ``sys.path`` (the repository root, with ``python -m``) would
shadow it. Installed, the folder is the ``clusterpedia.operator`` package (pyproject.toml
``package-dir``). The handlers arrive with the operator issue.
"""
