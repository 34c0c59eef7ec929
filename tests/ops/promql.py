"""Just enough PromQL reading to find the metric names (and matched labels) an expression uses."""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_RANGE = re.compile(r"\[[^\]]*\]")
# Label lists of grouping and vector-matching clauses name labels, not metrics.
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_SELECTOR = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each metric selector of ``expr``: (metric name, label names its matchers use)."""
    text = _STRING.sub('""', expr)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    found = []
    for match in _SELECTOR.finditer(text):
        name, matchers = match.group(1), match.group(2) or ""
        following = text[match.end() :].lstrip()
        if name.lower() in _KEYWORDS or (following.startswith("(") and not matchers):
            continue  # a function or aggregation call, or an operator
        found.append((name, set(_MATCHER_LABEL.findall(matchers))))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    return {name for name, _ in selectors(expr)}
