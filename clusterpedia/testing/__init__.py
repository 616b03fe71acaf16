"""Test harness shared by tests, benchmarks and the playground.

``assets`` provisions kube-apiserver, etcd and kubectl; ``controlplane`` runs them; ``databases``
creates throw-away databases on real servers. Importing this package pulls in nothing heavy so
``python -m clusterpedia.testing.assets`` works before the project's dependencies are installed.
"""
