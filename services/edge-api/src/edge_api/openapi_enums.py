"""Named, shared enums in the OpenAPI document.

FastAPI writes every enum inline, so a generated client gets one class per place
(a submit body's style, a job's style, ...) and a job's settings cannot be passed
back into a new submission without converting. Here each enum of the same values
becomes one ``#/components/schemas/<Name>`` that every place refers to.
"""

from __future__ import annotations

from typing import Any

# What a shared enum keeps of the inline schema it replaces (the type is the component's).
_KEPT = ("description", "default", "examples")


def share_enums(document: dict[str, Any], named: dict[str, list[str]]) -> None:
    """Replace inline string enums whose values equal one of ``named`` by a ``$ref``."""
    # By set: the same choices in another order are still the same type.
    by_values = {frozenset(values): name for name, values in named.items()}
    schemas = document["components"]["schemas"]
    if clashes := set(named) & set(schemas):
        # Overwriting a model of the same name would silently break the document.
        raise ValueError(f"enum names already used by schemas: {sorted(clashes)}")
    _replace(document["paths"], by_values)
    _replace(schemas, by_values)
    for name, values in named.items():
        schemas[name] = {"type": "string", "enum": list(values), "title": name}


def _replace(node: Any, by_values: dict[frozenset[str], str]) -> None:
    if isinstance(node, dict):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return
    for key, child in children:
        name = _shared_name(child, by_values)
        if name is None:
            _replace(child, by_values)
        else:
            kept = {field: child[field] for field in _KEPT if field in child}
            node[key] = {"$ref": f"#/components/schemas/{name}", **kept}


def _shared_name(node: Any, by_values: dict[frozenset[str], str]) -> str | None:
    if isinstance(node, dict) and node.get("type") == "string" and "enum" in node:
        return by_values.get(frozenset(node["enum"]))
    return None
