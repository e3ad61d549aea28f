"""Contract tests every permission backend passes.

Subclass :class:`PermissionContract` in a test module (its name must start with
``Test``) and provide a ``permission`` fixture yielding a fresh, empty backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

from nuages.permission.protocol import BoundPermission, Permission

BUCKET = "/buckets/b"
COLLECTION = "/buckets/b/collections/c"
RECORD = "/buckets/b/collections/c/records/r"


class Boom(Exception):
    """Raised inside a transaction to make it roll back."""


async def replace(permission: Permission, uri: str, acl: Mapping[str, Iterable[str]]) -> None:
    async with permission.transaction(write=True) as tx:
        await tx.replace_object_permissions(uri, acl)


async def acl(permission: Permission, uri: str) -> dict[str, set[str]]:
    async with permission.transaction(write=False) as tx:
        return await tx.get_object_permissions(uri)


async def accessible(
    permission: Permission, principals: Iterable[str], bound: Iterable[BoundPermission]
) -> dict[str, set[str]]:
    async with permission.transaction(write=False) as tx:
        return await tx.get_accessible_objects(principals, bound)


async def allowed(
    permission: Permission, principals: Iterable[str], bound: Iterable[BoundPermission]
) -> bool:
    async with permission.transaction(write=False) as tx:
        return await tx.check_permission(principals, bound)


async def user_principals(permission: Permission, user_id: str) -> set[str]:
    async with permission.transaction(write=False) as tx:
        return await tx.get_user_principals(user_id)


class PermissionContract:
    """The behaviour of :class:`nuages.permission.protocol.Permission`."""

    # -- access control entries ---------------------------------------------------
    async def test_unknown_object_has_no_permissions(self, permission: Permission) -> None:
        assert await acl(permission, BUCKET) == {}

    async def test_replace_then_get(self, permission: Permission) -> None:
        await replace(permission, BUCKET, {"write": ["alice", "bob"], "read": iter(["carol"])})
        assert await acl(permission, BUCKET) == {"write": {"alice", "bob"}, "read": {"carol"}}
        assert await acl(permission, COLLECTION) == {}

    async def test_replace_touches_only_the_named_permissions(self, permission: Permission) -> None:
        await replace(permission, BUCKET, {"write": ["alice"], "read": ["carol"]})
        await replace(permission, BUCKET, {"write": ["bob", "bob"]})
        assert await acl(permission, BUCKET) == {"write": {"bob"}, "read": {"carol"}}

    async def test_replace_with_no_principals_drops_the_permission(
        self, permission: Permission
    ) -> None:
        await replace(permission, BUCKET, {"write": ["alice"], "read": ["carol"]})
        await replace(permission, BUCKET, {"write": []})
        assert await acl(permission, BUCKET) == {"read": {"carol"}}
        await replace(permission, BUCKET, {"read": set()})
        assert await acl(permission, BUCKET) == {}

    async def test_add_principal_to_ace(self, permission: Permission) -> None:
        async with permission.transaction(write=True) as tx:
            await tx.add_principal_to_ace(BUCKET, "write", "alice")
            await tx.add_principal_to_ace(BUCKET, "write", "alice")
            await tx.add_principal_to_ace(BUCKET, "read", "bob")
        assert await acl(permission, BUCKET) == {"write": {"alice"}, "read": {"bob"}}

    async def test_delete_object_permissions_exact_and_patterns(
        self, permission: Permission
    ) -> None:
        uris = [
            BUCKET,
            COLLECTION,
            RECORD,
            "/buckets/b/collections/c2",
            "/buckets/bb",
            "/buckets/b/groups/g",
        ]
        for uri in uris:
            await replace(permission, uri, {"read": ["alice"]})
        async with permission.transaction(write=True) as tx:
            await tx.delete_object_permissions(BUCKET, "/buckets/b/collections/*")
        for uri, expected in [
            (BUCKET, {}),
            (COLLECTION, {}),
            (RECORD, {}),
            ("/buckets/b/collections/c2", {}),
            ("/buckets/bb", {"read": {"alice"}}),
            ("/buckets/b/groups/g", {"read": {"alice"}}),
        ]:
            assert await acl(permission, uri) == expected, uri
        async with permission.transaction(write=True) as tx:
            await tx.delete_object_permissions()  # no pattern: nothing happens
            await tx.delete_object_permissions("*")
        assert await acl(permission, "/buckets/bb") == {}

    async def test_star_is_a_wildcard_only_at_the_end(self, permission: Permission) -> None:
        await replace(permission, "/buckets/b*/x", {"read": ["alice"]})
        await replace(permission, "/buckets/bc/x", {"read": ["alice"]})
        async with permission.transaction(write=True) as tx:
            await tx.delete_object_permissions("/buckets/b*/x")
        assert await acl(permission, "/buckets/b*/x") == {}
        assert await acl(permission, "/buckets/bc/x") == {"read": {"alice"}}

    async def test_patterns_take_percent_and_underscore_literally(
        self, permission: Permission
    ) -> None:
        for uri in ("/a%b/1", "/axb/1", "/a_b/1", "/ayb/1", "/a\\b/1"):
            await replace(permission, uri, {"read": ["alice"]})
        found = await accessible(
            permission, ["alice"], [("/a%b/*", "read"), ("/a_b/*", "read"), ("/a\\b/*", "read")]
        )
        assert found == {"/a%b/1": {"read"}, "/a_b/1": {"read"}, "/a\\b/1": {"read"}}

    async def test_patterns_with_unusual_characters(self, permission: Permission) -> None:
        uris = ["/é/1", "/é/2", "/ê/1", "/\U0010ffff/1", "/\U0010ffff", "/\ud7ff/1", "/\ue000/1"]
        for uri in uris:
            await replace(permission, uri, {"read": ["alice"]})
        for pattern, expected in [
            ("/é/*", {"/é/1", "/é/2"}),
            ("/é*", {"/é/1", "/é/2"}),
            ("/\U0010ffff*", {"/\U0010ffff/1", "/\U0010ffff"}),
            ("/\ud7ff*", {"/\ud7ff/1"}),
            ("*", set(uris)),
        ]:
            assert set(await accessible(permission, ["alice"], [(pattern, "read")])) == expected

    async def test_check_permission(self, permission: Permission) -> None:
        await replace(permission, BUCKET, {"write": ["alice"], "read": ["group:readers"]})
        assert await allowed(permission, ["alice"], [(BUCKET, "write")])
        assert await allowed(permission, {"bob", "group:readers"}, [(BUCKET, "read")])
        assert await allowed(permission, ["bob", "alice"], [(BUCKET, "read"), (BUCKET, "write")])
        assert not await allowed(permission, ["bob"], [(BUCKET, "write")])
        assert not await allowed(permission, ["alice"], [(BUCKET, "read")])
        assert not await allowed(permission, ["alice"], [(COLLECTION, "write")])
        assert not await allowed(permission, [], [(BUCKET, "write")])
        assert not await allowed(permission, ["alice"], [])
        # check_permission takes exact URIs, not patterns
        assert not await allowed(permission, ["alice"], [("/buckets/*", "write")])

    async def test_get_accessible_objects(self, permission: Permission) -> None:
        await replace(permission, BUCKET, {"write": ["alice"], "read": ["bob"]})
        await replace(permission, "/buckets/other", {"read": ["alice", "bob"]})
        await replace(permission, COLLECTION, {"read": ["alice"]})
        await replace(permission, "/buckets/mine", {"read": ["carol"]})
        bound = [("/buckets/*", "read"), ("/buckets/*", "write")]
        assert await accessible(permission, ["alice"], bound) == {
            BUCKET: {"write"},
            "/buckets/other": {"read"},
            COLLECTION: {"read"},
        }
        buckets_only = [("/buckets/other", "read"), (BUCKET, "read"), (BUCKET, "write")]
        assert await accessible(permission, ["alice", "bob"], buckets_only) == {
            BUCKET: {"read", "write"},
            "/buckets/other": {"read"},
        }
        assert await accessible(permission, ["dave"], bound) == {}
        assert await accessible(permission, [], bound) == {}
        assert await accessible(permission, ["alice"], []) == {}

    async def test_many_principals(self, permission: Permission) -> None:
        await replace(permission, BUCKET, {"read": ["p4999"]})
        principals = [f"p{i}" for i in range(5000)]
        assert await allowed(permission, principals, [(BUCKET, "read")])
        assert await accessible(permission, principals, [("*", "read")]) == {BUCKET: {"read"}}

    # -- user principals ----------------------------------------------------------
    async def test_user_principals(self, permission: Permission) -> None:
        assert await user_principals(permission, "alice") == set()
        async with permission.transaction(write=True) as tx:
            await tx.add_user_principal("alice", "/buckets/b/groups/g1")
            await tx.add_user_principal("alice", "/buckets/b/groups/g1")
            await tx.add_user_principal("alice", "/buckets/b/groups/g2")
            await tx.add_user_principal("system.Authenticated", "/buckets/b/groups/all")
        assert await user_principals(permission, "alice") == {
            "/buckets/b/groups/g1",
            "/buckets/b/groups/g2",
        }
        assert await user_principals(permission, "system.Authenticated") == {
            "/buckets/b/groups/all"
        }
        async with permission.transaction(write=True) as tx:
            await tx.remove_user_principal("alice", "/buckets/b/groups/g1")
            await tx.remove_user_principal("alice", "unknown")
            await tx.remove_user_principal("nobody", "unknown")
        assert await user_principals(permission, "alice") == {"/buckets/b/groups/g2"}

    async def test_remove_principal_from_every_user(self, permission: Permission) -> None:
        async with permission.transaction(write=True) as tx:
            for user in ("alice", "bob"):
                await tx.add_user_principal(user, "/buckets/b/groups/g")
                await tx.add_user_principal(user, f"/buckets/b/groups/{user}")
            await tx.remove_principal("/buckets/b/groups/g")
        assert await user_principals(permission, "alice") == {"/buckets/b/groups/alice"}
        assert await user_principals(permission, "bob") == {"/buckets/b/groups/bob"}

    async def test_principals_read_in_a_transaction_follow_its_writes(
        self, permission: Permission
    ) -> None:
        """A backend may keep the principals it read for the rest of the transaction (a
        batch reads them once): its own writes must still show in the next read."""
        async with permission.transaction(write=True) as tx:
            assert await tx.get_user_principals("alice", "system.Authenticated") == set()
            await tx.add_user_principal("alice", "g1")
            assert await tx.get_user_principals("alice", "system.Authenticated") == {"g1"}
            await tx.add_user_principal("system.Authenticated", "g2")
            assert await tx.get_user_principals("alice", "system.Authenticated") == {"g1", "g2"}
            await tx.remove_user_principal("alice", "g1")
            assert await tx.get_user_principals("alice", "system.Authenticated") == {"g2"}
            await tx.remove_principal("g2")
            assert await tx.get_user_principals("alice", "system.Authenticated") == set()
            await tx.add_user_principal("alice", "g3")
            assert await tx.get_user_principals("alice") == {"g3"}

    # -- transactions, flush ------------------------------------------------------
    async def test_failed_write_transaction_leaves_no_trace(self, permission: Permission) -> None:
        await replace(permission, BUCKET, {"write": ["alice"]})
        async with permission.transaction(write=True) as tx:
            await tx.add_user_principal("alice", "g")
        with pytest.raises(Boom):
            async with permission.transaction(write=True) as tx:
                await tx.replace_object_permissions(BUCKET, {"write": ["mallory"]})
                await tx.add_principal_to_ace(COLLECTION, "read", "mallory")
                await tx.add_user_principal("mallory", "g")
                await tx.remove_principal("g")
                await tx.delete_object_permissions("*")
                raise Boom
        assert await acl(permission, BUCKET) == {"write": {"alice"}}
        assert await acl(permission, COLLECTION) == {}
        assert await user_principals(permission, "alice") == {"g"}
        assert await user_principals(permission, "mallory") == set()

    async def test_flush(self, permission: Permission) -> None:
        await replace(permission, BUCKET, {"write": ["alice"]})
        async with permission.transaction(write=True) as tx:
            await tx.add_user_principal("alice", "g")
        await permission.flush()
        assert await acl(permission, BUCKET) == {}
        assert await user_principals(permission, "alice") == set()

    async def test_ping(self, permission: Permission) -> None:
        assert await permission.ping() is True
