"""Clusterpedia's search language: URL parameters, search labels, selectors, time formats.

Parsing only: the result is a :class:`clusterpedia.storage.query.Query`, compiled to SQL by the
storage layer. Every malformed input raises :class:`clusterpedia.storage.errors.InvalidQuery`.
"""
