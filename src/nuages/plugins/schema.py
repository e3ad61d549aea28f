"""JSON-schema validation of records, collections and groups (protocol/10 §1).

Enabled by ``experimental_collection_schema_validation``. A ``prepare`` listener (nothing is
written yet when it rejects) validates:

* a record against its collection's ``schema`` (then stamps ``record.schema`` with the
  collection's ``last_modified``, the schema "version"), then against the bucket's
  ``record:schema``;
* a collection against the bucket's ``collection:schema``, a group against ``group:schema``.

Failures are 400 errno 107 with Kinto's ``name`` rule (the failing field). Validators come
from jsonschema-rs, compiled once per (object URI, field, timestamp) and cached; remote
``$ref`` are never fetched (a server must not make requests on behalf of a schema author).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import jsonschema_rs

from nuages.core.errors import ObjectNotFound, ValidationError
from nuages.core.events import Change

if TYPE_CHECKING:
    from nuages.core.service import Tx
    from nuages.web.dispatch import Dispatcher

JSONObject = dict[str, Any]

CAPABILITY: Final = {
    "description": "Validates collection records with JSON schemas.",
    "url": "https://kinto.readthedocs.io/en/latest/api/1.x/collections.html#collection-json-schema",
}
CACHE_SIZE: Final = 512
# Fields the server manages: never validated (protocol/10 §1).
RECORD_IGNORED: Final = ("last_modified", "schema")
OTHER_IGNORED: Final = ("last_modified",)


class SchemaValidator:
    """Validates objects against the schemas stored on their collection and bucket."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        # (uri, field, timestamp) -> (schema as stored, compiled validator)
        self._cache: OrderedDict[tuple[str, str, int], tuple[JSONObject, Any]] = OrderedDict()
        self._cache_size = cache_size

    async def prepare(self, tx: Tx, change: Change) -> JSONObject | None:
        """The prepare listener: validate `change.new`, stamp records with the schema version."""
        new = change.new
        if new is None:
            return None
        bucket_id = change.ids["bucket"]
        bucket = await tx.storage.get("bucket", "", bucket_id)
        if bucket is None:
            raise ObjectNotFound("bucket", bucket_id, parent=True)
        bucket_uri = f"/buckets/{bucket_id}"
        if change.resource_name == "record":
            new = dict(new)
            collection_id = change.ids["collection"]
            collection = await tx.storage.get("collection", bucket_uri, collection_id)
            if collection is not None and "schema" in collection:
                uri = f"{bucket_uri}/collections/{collection_id}"
                self.validate(new, collection, "schema", uri, RECORD_IGNORED)
                new["schema"] = collection["last_modified"]
            self.validate(new, bucket, "record:schema", bucket_uri, RECORD_IGNORED)
            return new
        self.validate(new, bucket, f"{change.resource_name}:schema", bucket_uri, OTHER_IGNORED)
        return None

    def validate(
        self,
        data: Mapping[str, Any],
        owner: Mapping[str, Any],
        field: str,
        uri: str,
        ignored: Sequence[str],
    ) -> None:
        """Check `data` against ``owner[field]`` (if any); 400 naming the failing field."""
        schema = owner.get(field)
        if not isinstance(schema, dict):
            return
        ignore = set(ignored)
        # `id` is the server's unless the schema talks about it (Kinto's rule).
        properties = schema.get("properties")
        if not (isinstance(properties, dict) and "id" in properties):
            ignore.add("id")
        effective, validator = self._compiled(schema, uri, field, owner["last_modified"], ignore)
        instance = {k: v for k, v in data.items() if k not in ignore}
        try:
            error = next(iter(validator.iter_errors(instance)), None)
        except (ValueError, jsonschema_rs.ValidationError) as exc:
            raise _schema_error(exc) from None
        if error is not None:
            name = _field_name(error, effective)
            raise ValidationError(error.message, location="body", name=name)

    def _compiled(
        self, schema: JSONObject, uri: str, field: str, timestamp: int, ignore: set[str]
    ) -> tuple[JSONObject, Any]:
        key = (uri, field, timestamp)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == schema:
            self._cache.move_to_end(key)
            return _without_required(schema, ignore), cached[1]
        effective = _without_required(schema, ignore)
        try:
            # Formats are annotations, as in Kinto (python-jsonschema without a format
            # checker); `offline`: a $ref to a URL is an error, never a request.
            validator = jsonschema_rs.validator_for(effective, validate_formats=False, offline=True)
        except (ValueError, jsonschema_rs.ValidationError) as exc:
            raise _schema_error(exc) from None
        self._cache[key] = (schema, validator)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return effective, validator


def _without_required(schema: JSONObject, ignore: set[str]) -> JSONObject:
    """The schema minus ignored names in its top-level ``required`` (dropped when empty)."""
    required = schema.get("required")
    if not isinstance(required, list):
        return schema
    kept = [name for name in required if name not in ignore]
    if kept:
        return {**schema, "required": kept}
    return {k: v for k, v in schema.items() if k != "required"}


def _field_name(error: Any, schema: JSONObject) -> str:
    """Kinto's ``name``: the failing instance path's last element, else the last element of
    the failing keyword's value (``required``: the last name listed), else of the schema path."""
    if error.instance_path:
        return str(error.instance_path[-1])
    value: Any = schema
    try:
        for part in error.schema_path:
            value = value[part]
    except (KeyError, IndexError, TypeError):
        value = None
    if isinstance(value, list) and value:
        return str(value[-1])
    path = list(error.schema_path)
    return str(path[-1]) if path else ""


def _schema_error(exc: Exception) -> ValidationError:
    """An unusable schema (e.g. an unresolvable ``$ref``): 400 named ``schema``."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ValidationError(reason, location="body", name="schema")


def install(dispatcher: Dispatcher) -> SchemaValidator:
    """Validate records, collections and groups written through `dispatcher`'s service."""
    validator = SchemaValidator()
    dispatcher.service.events.on_prepare(
        validator.prepare, resources=("record", "collection", "group")
    )
    dispatcher.capabilities["schema"] = dict(CAPABILITY)
    return validator


__all__ = ["CAPABILITY", "SchemaValidator", "install"]
