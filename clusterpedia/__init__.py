"""clusterpedia-py: many Kubernetes clusters' objects in one SQL database, one Kubernetes-style API.

The core package: member-cluster access (``kube``), storage (``storage``), per-cluster sync
(``sync``) and the test harness (``testing``). The Kopf handlers and the aiohttp API server are
installed beside it as ``clusterpedia.operator`` and ``clusterpedia.apiserver``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clusterpedia-py")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
