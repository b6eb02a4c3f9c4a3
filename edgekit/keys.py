"""Typed reads from a parsed JSON or YAML mapping, for manifests and profiles alike: every
error names the file and the key's full path (``artifacts[2].sha256``), says what was wrong,
and ends with the subclass's advice."""

from __future__ import annotations

from typing import Any

from edgekit.errors import EdgekitError, UsageError

REQUIRED: Any = ...  # the default of a key that must be present


class Keys:
    error: type[EdgekitError] = UsageError
    advice = ""  # appended to every error: what to do about it

    def __init__(self, source: str, data: Any, where: str = "") -> None:
        self.source, self.data, self.where = source, data, where
        if not isinstance(data, dict):
            what = f"key '{where}'" if where else "the file"
            raise self.error(f"{source}: {what} must be a mapping, got {type(data).__name__}{self.advice}")

    def path(self, key: str) -> str:
        if not key:
            return self.where
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, why: str) -> EdgekitError:
        return self.error(f"{self.source}: key '{self.path(key)}' {why}{self.advice}")

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = REQUIRED,
            choices: tuple[Any, ...] = ()) -> Any:
        """The value of `key`, of type `typ` (an int is taken for a float, a bool never for a
        number); `default` when it is missing or null, or an error if there is none."""
        v = self.data.get(key)
        if v is None:
            if default is REQUIRED:
                raise self.fail(key, "is missing")
            return default
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        types = typ if isinstance(typ, tuple) else (typ,)
        if not isinstance(v, typ) or (isinstance(v, bool) and bool not in types):
            name = "/".join(t.__name__ for t in types)
            shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
            raise self.fail(key, f"must be {name}, got {type(v).__name__} {shown}")
        if choices and v not in choices:
            raise self.fail(key, f"must be one of {', '.join(map(str, choices))}, got {v!r}")
        return v

    def strings(self, key: str, choices: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A list of strings (empty when missing), each one of `choices` if given."""
        items = self.get(key, list, [])
        for i, v in enumerate(items):
            if not isinstance(v, str):
                raise self.fail(f"{key}[{i}]", f"must be a string, got {v!r}")
            if choices and v not in choices:
                raise self.fail(f"{key}[{i}]", f"must be one of {', '.join(choices)}, got {v!r}")
        return tuple(items)

    def sub(self, key: str, default: Any = REQUIRED) -> Keys:
        """The mapping under `key`, read the same way."""
        return type(self)(self.source, self.get(key, dict, default), self.path(key))

    def item(self, key: str, i: int, data: Any) -> Keys:
        """Element `i` of the list under `key`, a mapping read the same way."""
        return type(self)(self.source, data, f"{self.path(key)}[{i}]")
