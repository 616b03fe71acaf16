"""The aiohttp application of the aggregated API server (installed as clusterpedia.apiserver).

Like ``operator/``, this folder has no top-level ``__init__.py`` and installs under the
``clusterpedia`` namespace. The handler chain arrives with the API server issue.
"""
