"""The URL layout of the aggregated API, shared by the server and ``clusterpedia kubeconfig``.

``RESOURCES_PATH`` is the original's. ``LONG_RUNNING_PATH`` serves the same requests under
a layout the host's kube-apiserver treats as long-running: it reads the segment after the
group and version as a special verb, ``proxy``, and never applies its ``--request-timeout``
to such a request, so an ``exec`` session, a followed log or a watch through it is not cut
after a minute (with the original's layout the host sees a ``get`` of ``resources`` and cuts
it). The host authorizes it as verb ``proxy`` on ``clusterpedia.io`` ``resources``; we serve
it exactly as the path without ``proxy/``, and authorize that.
"""

from __future__ import annotations

GROUP_VERSION_PATH = "/apis/clusterpedia.io/v1beta1"
RESOURCES_PATH = f"{GROUP_VERSION_PATH}/resources"
LONG_RUNNING_PATH = f"{GROUP_VERSION_PATH}/proxy/resources"


def without_long_running_prefix(path: str) -> str | None:
    """The path the long-running layout stands for, or None if ``path`` does not use it."""
    if path == LONG_RUNNING_PATH or path.startswith(LONG_RUNNING_PATH + "/"):
        return RESOURCES_PATH + path[len(LONG_RUNNING_PATH) :]
    return None
