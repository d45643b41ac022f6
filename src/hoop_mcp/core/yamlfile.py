"""Reading hoop-mcp's YAML files safely: size cap, no aliases (YAML bombs), no duplicate keys, bounded depth.

Used for both the server configuration and policy files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hoop_mcp.core.errors import ConfigError

MAX_YAML_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 32


class StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases, duplicate keys and deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise yaml.composer.ComposerError(None, None, f"anchors (&{anchor}) are not allowed", mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError as exc:  # unhashable key, e.g. a list
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain values", key_node.start_mark
                ) from exc
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, *, source: str, what: str = "file") -> Any:
    """Parse one YAML document strictly; errors are ``ConfigError`` naming ``source`` and the line."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {what} is larger than {MAX_YAML_BYTES} bytes", details={"file": source})
    try:
        return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(
            f"{source}: invalid YAML{where}: {exc.problem or exc.context}", details={"file": source}
        ) from exc
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{source}: invalid YAML: {type(exc).__name__}", details={"file": source}) from exc


def read_text_file(path: Path, *, what: str = "file") -> str:
    """Read a UTF-8 file of at most ``MAX_YAML_BYTES`` (without reading more than that)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read {what}: {exc.strerror or exc}", details={"file": str(path)}
        ) from exc
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{path}: {what} is larger than {MAX_YAML_BYTES} bytes", details={"file": str(path)}
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not valid UTF-8", details={"file": str(path)}) from exc
