"""One serializer from the frozen result dataclasses to the JSON documented in the README.

Every stage result derives from ``Serializable``; its ``to_dict()`` is ``to_json(self)``: each
dataclass field under its own name, enums as their values, tuples as lists, nested results
serialized the same way. A field whose metadata says ``json=False`` is left out; names listed
in ``JSON_PROPERTIES`` (computed properties, such as an exit code) are added after the fields.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar


def to_json(value: Any) -> Any:
    """``value`` as plain JSON types. Does not perform I/O."""
    if isinstance(value, Serializable) or callable(getattr(value, "to_dict", None)):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) else k: to_json(v) for k, v in value.items()}
    return value


def hidden(**kwargs: Any) -> Any:
    """A dataclass field that the JSON leaves out (``dataclasses.field`` keywords pass through)."""
    return dataclasses.field(metadata={"json": False}, **kwargs)


class Serializable:
    """Mixin for frozen dataclasses: ``to_dict()`` gives the documented JSON document."""

    JSON_PROPERTIES: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: to_json(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.metadata.get("json", True)
        }
        for name in self.JSON_PROPERTIES:
            out[name] = to_json(getattr(self, name))
        return out
