"""What went wrong in YAML, without the YAML: PyYAML's messages quote the text around the
problem, and that text may be a credential (a kubeconfig, a storage config with its password,
a template rendered from a Secret)."""

from __future__ import annotations

import re

import yaml

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def yaml_problem(error: yaml.YAMLError) -> str:
    """The reason and position of a YAML error, with anything it quotes left out."""
    problem = getattr(error, "problem", None) or "not YAML"
    problem = _QUOTED.sub("<...>", str(problem))
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
