"""The personal bucket: ``/buckets/default`` aliases the caller's own bucket (protocol/10 §2).

The real id is ``UUID(first 32 hex digits of HMAC-SHA256(default_bucket_hmac_secret,
user id))``, shown as ``user.bucket`` in ``GET /v1/``. A request through the alias:

1. is refused with 401 when anonymous (405 in readonly mode: it may create);
2. creates the bucket, and the collection its path names, when they do not exist yet —
   unless the request is itself the ``PUT`` of that bucket or collection — with the caller
   in their ``write`` ACL, through the service (so plugins see normal ``create`` changes),
   bypassing the ``*_create_principals`` settings as Kinto does;
3. continues as a request on ``/buckets/<real id>/…``, with every ``default`` inside a
   string ``data.id`` of a JSON body replaced by the real id (Kinto's quirk), so responses,
   ``Next-Page`` links and ids all name the real bucket.

Creation is race-free: existence is checked in a read transaction, and only missing objects
are created — one creator per personal bucket at a time in a process — in a write
transaction that checks again; a concurrent creation by another process that slips in
between (PostgreSQL) reruns the request, which then finds the object.
Inside a batch, the batch's own transaction is used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import uuid
from typing import TYPE_CHECKING, Any, Final

import orjson

from nuages.core import preconditions
from nuages.core.authorization import AUTHENTICATED, load_caller
from nuages.core.errors import (
    InvalidObjectId,
    MethodNotAllowed,
    PreconditionFailed,
    TransactionConflict,
    Unauthorized,
    UnicityError,
)
from nuages.core.resource import ResourceSpec
from nuages.core.service import Call, Service

if TYPE_CHECKING:
    from nuages.core.service import Tx
    from nuages.web.dispatch import Dispatcher, Route
    from nuages.web.messages import WebRequest

__all__ = ["ALIAS", "DefaultBucket", "default_bucket_id", "install"]

ALIAS: Final = "default"
_LOCK_STRIPES: Final = 64
CAPABILITY: Final = {
    "description": "The default bucket is an alias for a personal bucket where collections "
    "are created implicitly.",
    "url": "https://kinto.readthedocs.io/en/latest/api/1.x/buckets.html#personal-bucket-default",
}


def default_bucket_id(secret: str, user_id: str) -> str:
    """The personal bucket id of `user_id`, formatted 8-4-4-4-12 (not a valid UUID4)."""
    digest = hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()
    return str(uuid.UUID(digest[:32]))


def _rewrite_body(body: bytes, bucket_id: str) -> bytes:
    """Replace ``default`` inside a string ``data.id``; any other body passes unchanged."""
    if not body.strip():
        return body
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body  # the route answers the invalid JSON itself
    data = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return body
    data["id"] = data["id"].replace(ALIAS, bucket_id)
    return orjson.dumps(parsed)


class DefaultBucket:
    """The request hook resolving ``/buckets/default``, and the implicit creations."""

    def __init__(self, dispatcher: Dispatcher, bucket: ResourceSpec, collection: ResourceSpec):
        self._d = dispatcher
        self._secret = dispatcher.settings.default_bucket_hmac_secret
        self._bucket = bucket
        self._collection = collection
        main = dispatcher.service
        # Implicit creations bypass the *_create_principals settings (any authenticated user
        # has a personal bucket): a service whose settings grant exactly those creations.
        grants = {
            **main.config.principals,
            f"{bucket.name}:create": (AUTHENTICATED,),
            f"{collection.name}:create": (AUTHENTICATED,),
        }
        self._creator = Service(
            storage=main.storage,
            permission=main.permission,
            cache=main.cache,
            tree=main.tree,
            config=dataclasses.replace(main.config, principals=grants),
            events=main.events,
        )

        self._locks = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]

    def bucket_id(self, user_id: str) -> str:
        return default_bucket_id(self._secret, user_id)

    def user_info(self, user_id: str) -> dict[str, Any]:
        """The ``bucket`` field of ``user`` in ``GET /v1/``."""
        return {"bucket": self.bucket_id(user_id)}

    def _targets(self, route: Route, params: dict[str, str]) -> tuple[bool, str | None] | None:
        """(whether the bucket itself is addressed, the collection id in the path, if any),
        or None when the request does not go through the alias."""
        spec = route.spec
        if spec is None:
            return None
        if spec is self._bucket and not route.plural and params.get("id") == ALIAS:
            return True, None
        if params.get(self._bucket.name) != ALIAS:
            return None
        if spec is self._collection and not route.plural:
            return False, params.get("id")
        return False, params.get(self._collection.name)

    async def __call__(
        self, req: WebRequest, route: Route, params: dict[str, str], tx: Tx | None
    ) -> tuple[WebRequest, dict[str, str]]:
        targets = self._targets(route, params)
        if targets is None:
            return req, params
        is_bucket, collection_id = targets
        if self._d.settings.readonly:
            raise MethodNotAllowed()
        user_id = await self._d.authenticate(req, tx)
        if user_id is None:
            raise Unauthorized()
        if collection_id is not None and not self._collection.is_valid_id(collection_id):
            raise InvalidObjectId()
        bucket_id = self.bucket_id(user_id)
        # The PUT of the bucket (or of the collection) creates it itself, with its body.
        want_bucket = not (is_bucket and req.method == "PUT")
        is_collection = route.spec is self._collection and not route.plural
        want_collection = collection_id is not None and not (is_collection and req.method == "PUT")
        wanted: list[tuple[ResourceSpec, dict[str, str], str]] = []
        if want_bucket:
            wanted.append((self._bucket, {}, bucket_id))
        if want_collection:
            assert collection_id is not None
            wanted.append((self._collection, {self._bucket.name: bucket_id}, collection_id))
        if wanted:
            await self._ensure(user_id, wanted, tx)

        new_params = dict(params)
        key = "id" if is_bucket else self._bucket.name
        new_params[key] = bucket_id
        alias_path = f"{self._d.prefix}/{self._bucket.plural}/{ALIAS}"
        new_path = f"{self._d.prefix}/{self._bucket.plural}/{bucket_id}"
        path = new_path + req.path[len(alias_path) :]
        body = _rewrite_body(req.body, bucket_id)
        return dataclasses.replace(req, path=path, body=body), new_params

    async def _ensure(
        self,
        user_id: str,
        wanted: list[tuple[ResourceSpec, dict[str, str], str]],
        tx: Tx | None,
    ) -> None:
        """Create what is missing of `wanted` (spec, parent ids, id), parents first."""
        if tx is not None:
            await self._create(user_id, wanted, tx)
            return
        async with self._d.transaction(None, write=False) as read:
            wanted = [w for w in wanted if not await self._exists(read, *w)]
        if not wanted:
            return  # the usual case: one cheap read, no write transaction
        # One creator at a time per personal bucket in this process: concurrent first
        # requests wait here without holding a database connection, then find the objects.
        async with self._locks[hash(wanted[0][2]) % len(self._locks)]:
            await self._create(user_id, wanted, None)

    async def _create(
        self,
        user_id: str,
        wanted: list[tuple[ResourceSpec, dict[str, str], str]],
        tx: Tx | None,
    ) -> None:
        async with self._d.transaction(tx, write=True) as t:
            caller = await load_caller(t.permission, user_id)
            for spec, ids, object_id in wanted:
                if await self._exists(t, spec, ids, object_id):
                    continue
                call = Call(
                    spec=spec,
                    ids=ids,
                    caller=caller,
                    object_id=object_id,
                    # The caller owns it even with explicit_permissions off (as Kinto).
                    body={"permissions": {"write": [user_id]}},
                    if_none_match=preconditions.ANY,
                )
                try:
                    await self._creator.put_object(t, call)
                except PreconditionFailed:
                    pass  # created meanwhile, and visible to us: just what we wanted
                except UnicityError as exc:
                    # Created meanwhile by a concurrent transaction (several processes on
                    # PostgreSQL): rerun the request, which then finds it.
                    raise TransactionConflict(str(exc)) from exc

    @staticmethod
    async def _exists(tx: Tx, spec: ResourceSpec, ids: dict[str, str], object_id: str) -> bool:
        return await tx.storage.get(spec.name, spec.parent_uri(ids), object_id) is not None


def install(dispatcher: Dispatcher) -> None:
    """Resolve ``/buckets/default`` on every request and expose ``user.bucket``."""
    specs = {r.spec.name: r.spec for r in dispatcher.routes if r.spec is not None}
    alias = DefaultBucket(dispatcher, specs["bucket"], specs["collection"])
    dispatcher.request_hooks.append(alias)
    dispatcher.user_info.append(alias.user_info)
    dispatcher.capabilities["default_bucket"] = dict(CAPABILITY)
