"""The blueprint model: dataclasses that read and write the reference engine's JSON exactly.

Loading checks the document's shape (types, required fields) and raises `BlueprintFormatError`
naming the JSON path at fault; semantic checks live in `validation`. Unknown fields are kept
in `extra` and written back on save, so a document survives a load/dump round trip.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.model.strict_json import StrictJsonError, loads_strict, non_finite_path


class BlueprintFormatError(FlowcraftError, ValueError):
    """The document is not a blueprint: not JSON, or a field is missing or of the wrong type."""

    code = "MALFORMED_BLUEPRINT"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{self.code}: {path}: {message}")
        self.path = path
        self.detail = message


_NODE_FIELDS = ("id", "uses", "params", "inputs", "config")
_EDGE_FIELDS = ("source", "target", "action", "condition", "transform")
_CONFIG_FIELDS = ("maxRetries", "retryDelay", "timeout", "fallback", "joinStrategy", "queue")


@dataclass
class NodeConfig:
    """`config` of a node; None means "not given" (defaults apply and nothing is written back)."""

    max_retries: int | None = None
    retry_delay: float | None = None
    timeout: float | None = None
    fallback: str | None = None
    join_strategy: str | None = None
    queue: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def attempts(self) -> int:
        """Total attempts of the main phase (`maxRetries`, default 1)."""
        return self.max_retries if self.max_retries is not None else 1

    @property
    def delay_seconds(self) -> float:
        """Pause between attempts in seconds."""
        return (self.retry_delay or 0) / 1000.0

    @property
    def timeout_seconds(self) -> float | None:
        """Per-attempt time limit in seconds, or None."""
        return None if self.timeout is None else self.timeout / 1000.0

    @property
    def join(self) -> str:
        """The join strategy, `all` unless set."""
        return self.join_strategy or "all"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, only with the fields that were given."""
        out: dict[str, Any] = {}
        for key, value in (
            ("maxRetries", self.max_retries),
            ("retryDelay", self.retry_delay),
            ("timeout", self.timeout),
            ("fallback", self.fallback),
            ("joinStrategy", self.join_strategy),
            ("queue", self.queue),
        ):
            if value is not None:
                out[key] = value
        out.update(self.extra)
        return out


@dataclass
class NodeDefinition:
    """One node: `uses` names its implementation; `inputs` says where its input comes from."""

    id: str
    uses: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: str | dict[str, str] | None = None
    config: NodeConfig = field(default_factory=NodeConfig)
    extra: dict[str, Any] = field(default_factory=dict)
    has_params: bool = False
    has_config: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, in the reference's field order, with unknown fields kept."""
        out: dict[str, Any] = {"id": self.id, "uses": self.uses}
        if self.params or self.has_params:
            out["params"] = self.params
        if self.inputs is not None:
            out["inputs"] = self.inputs
        config = self.config.to_dict()
        if config or self.has_config:
            out["config"] = config
        out.update(self.extra)
        return out


@dataclass
class EdgeDefinition:
    """A directed edge, optionally gated by an action and a condition, with an input transform."""

    source: str
    target: str
    action: str | None = None
    condition: str | None = None
    transform: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A readable name for messages: `a -> b`."""
        return f"{self.source} -> {self.target}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form with only the fields that were given."""
        out: dict[str, Any] = {"source": self.source, "target": self.target}
        for key, value in (
            ("action", self.action),
            ("condition", self.condition),
            ("transform", self.transform),
        ):
            if value is not None:
                out[key] = value
        out.update(self.extra)
        return out


@dataclass
class Blueprint:
    """A workflow graph: nodes, edges and free-form metadata."""

    id: str
    nodes: list[NodeDefinition]
    edges: list[EdgeDefinition]
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        """`metadata.version` as declared (None when absent; see `run_version`)."""
        value = self.metadata.get("version")
        return None if value is None else str(value)

    @property
    def fingerprint(self) -> str:
        """A digest of the whole document (canonical JSON): differs whenever the document does.

        Computed once per object (every node message compares it): a blueprint is not to be
        changed in place once a run uses it; build or load a new one instead.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            cached = self.__dict__["_fingerprint"] = hashlib.sha256(canonical.encode()).hexdigest()
        return str(cached)

    @property
    def run_version(self) -> str:
        """What a run and a worker compare: `metadata.version`, else `sha256:<fingerprint>` (so a
        blueprint edited without a version bump is a different version)."""
        return self.version if self.version is not None else f"sha256:{self.fingerprint[:24]}"

    def node(self, node_id: str) -> NodeDefinition:
        """The node with this id (KeyError names it when absent)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"blueprint {self.id!r} has no node {node_id!r}")

    def to_dict(self) -> dict[str, Any]:
        """The reference's JSON form."""
        out: dict[str, Any] = {
            "id": self.id,
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges],
        }
        if self.metadata:
            out["metadata"] = self.metadata
        out.update(self.extra)
        return out

    def dumps(self, indent: int | None = 2) -> str:
        """Serialize to JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, default_id: str | None = None) -> Blueprint:
        """Build from parsed JSON; `default_id` names a document without `id` (the file's stem)."""
        return _parse_blueprint(data, default_id)

    @classmethod
    def loads(cls, text: str, default_id: str | None = None) -> Blueprint:
        """Parse JSON text."""
        try:
            data = loads_strict(text)
        except json.JSONDecodeError as exc:
            raise BlueprintFormatError("$", f"not JSON: {exc}") from exc
        except StrictJsonError as exc:
            raise BlueprintFormatError(exc.path, exc.detail) from None
        return cls.from_dict(data, default_id)

    @classmethod
    def load(cls, path: str | os.PathLike[str], blueprint_id: str | None = None) -> Blueprint:
        """Read a file; a document without `id` is named after the file (`200.json` is `200`)."""
        file = Path(path)
        blueprint = cls.loads(file.read_text(encoding="utf-8"), default_id=file.stem)
        if blueprint_id is not None:
            blueprint.id = blueprint_id
        return blueprint


def _expect(value: Any, kind: type | tuple[type, ...], path: str, what: str) -> Any:
    """Return `value` if it has the JSON type `kind`, else raise naming `path`."""
    is_bool = isinstance(value, bool)
    numeric = kind in (int, float, (int, float))
    if not isinstance(value, kind) or (numeric and is_bool):
        raise BlueprintFormatError(path, f"must be {what}, got {_type_name(value)}")
    return value


def _type_name(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _optional(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str,
              what: str) -> Any:
    """`data[key]` checked against `kind`, or None when absent or JSON null."""
    value = data.get(key)
    if value is None:
        return None
    return _expect(value, kind, f"{path}.{key}", what)


def _parse_config(data: Any, path: str) -> NodeConfig:
    """Parse a node's `config` object (types only; ranges are checked by validation)."""
    _expect(data, dict, path, "an object")
    return NodeConfig(
        max_retries=_optional(data, "maxRetries", int, path, "an integer"),
        retry_delay=_optional(data, "retryDelay", (int, float), path, "a number of milliseconds"),
        timeout=_optional(data, "timeout", (int, float), path, "a number of milliseconds"),
        fallback=_optional(data, "fallback", str, path, "a node id (string)"),
        join_strategy=_optional(data, "joinStrategy", str, path, '"all" or "any"'),
        queue=_optional(data, "queue", str, path, "a queue name (string)"),
        extra={k: v for k, v in data.items() if k not in _CONFIG_FIELDS},
    )


def _parse_inputs(value: Any, path: str) -> str | dict[str, str] | None:
    """`inputs`: a string, or an object whose values are strings."""
    if value is None or isinstance(value, str):
        return value
    _expect(value, dict, path, "a string or an object of strings")
    for key, item in value.items():
        _expect(item, str, f"{path}.{key}", "a string")
    return dict(value)


def parse_node(data: Any, path: str) -> NodeDefinition:
    """Parse one NodeDefinition; `path` names it in errors."""
    _expect(data, dict, path, "an object")
    for key in ("id", "uses"):
        if key not in data:
            raise BlueprintFormatError(f"{path}.{key}", "is required")
    node_id = _expect(data["id"], str, f"{path}.id", "a string")
    if not node_id:
        raise BlueprintFormatError(f"{path}.id", "must not be empty")
    params = data.get("params")
    return NodeDefinition(
        id=node_id,
        uses=_expect(data["uses"], str, f"{path}.uses", "a string"),
        params=dict(_expect(params, dict, f"{path}.params", "an object")) if params is not None else {},
        inputs=_parse_inputs(data.get("inputs"), f"{path}.inputs"),
        config=_parse_config(data["config"], f"{path}.config") if data.get("config") is not None
        else NodeConfig(),
        extra={k: v for k, v in data.items() if k not in _NODE_FIELDS},
        has_params="params" in data,
        has_config="config" in data,
    )


def _parse_edge(data: Any, path: str) -> EdgeDefinition:
    """Parse one EdgeDefinition."""
    _expect(data, dict, path, "an object")
    for key in ("source", "target"):
        if key not in data:
            raise BlueprintFormatError(f"{path}.{key}", "is required")
    return EdgeDefinition(
        source=_expect(data["source"], str, f"{path}.source", "a node id (string)"),
        target=_expect(data["target"], str, f"{path}.target", "a node id (string)"),
        action=_optional(data, "action", str, path, "a string"),
        condition=_optional(data, "condition", str, path, "an expression (string)"),
        transform=_optional(data, "transform", str, path, "an expression (string)"),
        extra={k: v for k, v in data.items() if k not in _EDGE_FIELDS},
    )


def _parse_blueprint(data: Any, default_id: str | None) -> Blueprint:
    """Parse a whole blueprint document."""
    _expect(data, dict, "$", "an object")
    bad_number = non_finite_path(data)
    if bad_number is not None:
        raise BlueprintFormatError(bad_number, "must be a finite number (JSON has no NaN or Infinity)")
    if "id" in data:
        blueprint_id = _expect(data["id"], str, "$.id", "a string")
    elif default_id is not None:
        blueprint_id = default_id
    else:
        raise BlueprintFormatError("$.id", "is required")
    if not blueprint_id:
        raise BlueprintFormatError("$.id", "must not be empty")
    for key in ("nodes", "edges"):
        if key not in data:
            raise BlueprintFormatError(f"$.{key}", "is required")
    nodes = _expect(data["nodes"], list, "$.nodes", "an array")
    edges = _expect(data["edges"], list, "$.edges", "an array")
    metadata = data.get("metadata")
    return Blueprint(
        id=blueprint_id,
        nodes=[parse_node(n, f"$.nodes[{i}]") for i, n in enumerate(nodes)],
        edges=[_parse_edge(e, f"$.edges[{i}]") for i, e in enumerate(edges)],
        metadata=dict(_expect(metadata, dict, "$.metadata", "an object")) if metadata is not None else {},
        extra={k: v for k, v in data.items() if k not in ("id", "nodes", "edges", "metadata")},
    )
