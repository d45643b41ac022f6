"""One Kubernetes object of a manifest, as parsed (shared by the parser, the checks and the backend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class KubeObject:
    """An object exactly as the server will receive it (JSON-compatible ``body``).

    ``body`` is what the checks inspect and what is sent: the agent's YAML is never forwarded,
    so the server cannot read it differently from the checks.
    """

    api_version: str
    kind: str
    name: str
    #: ``metadata.namespace`` as given in the manifest (``None`` when absent).
    namespace: str | None
    body: dict[str, Any]
    #: Position in the bundle (0-based, after ``List`` expansion).
    index: int
    #: Where it came from, for error messages: ``document 2`` or ``document 1, item 3``.
    source: str

    @property
    def group(self) -> str:
        """API group (``""`` for the core group)."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def label(self) -> str:
        """``Kind/name`` or ``Kind/namespace/name``, as plans and messages name objects."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"
