"""notes: a command-line notes app that works offline and syncs with a Nuages (or Kinto) server.

Notes live in a local SQLite file and are usable without a network; ``notes sync`` exchanges
changes with the server. Run ``python notes.py --help``. Settings come from flags or the
environment: ``NOTES_DB`` (default ``notes.db``), ``NOTES_SERVER``
(default ``http://127.0.0.1:8888/v1``), ``NOTES_USER`` (``user:password``), ``NOTES_BUCKET``.

    python notes.py add "Buy milk" --tag shopping
    python notes.py list --todo
    python notes.py done 3f2a          # any unique prefix of a note's id
    python notes.py sync               # conflicts: the server's version wins by default
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from nuages.client import (
    Client,
    ClientError,
    LocalCollection,
    LocalStore,
    RetryPolicy,
    Strategy,
    SyncStatus,
)

COLLECTION = "notes"


def find(notes: LocalCollection, prefix: str) -> dict[str, Any]:
    """The one note whose id starts with ``prefix`` (evaluated by SQLite, like every filter)."""
    matches = notes.list({"like_id": f"{prefix}*"}, limit=2)
    if len(matches) != 1:
        problem = "no note" if not matches else "several notes"
        raise SystemExit(f"notes: {problem} with an id starting with {prefix!r}")
    return matches[0]


def show(note: dict[str, Any], status: SyncStatus | None) -> str:
    mark = "x" if note.get("done") else " "
    tags = "".join(f" #{tag}" for tag in note.get("tags", []))
    pending = "" if status in (SyncStatus.SYNCED, None) else f"  ({status})"
    return f"[{mark}] {note['id'][:8]}  {note['text']}{tags}{pending}"


def cmd_add(notes: LocalCollection, args: argparse.Namespace) -> None:
    note = notes.create({"text": args.text, "done": False, "tags": args.tag or []})
    print(f"added {note['id'][:8]}")


def cmd_list(notes: LocalCollection, args: argparse.Namespace) -> None:
    filters: dict[str, Any] = {}
    if args.done:
        filters["done"] = True
    if args.todo:
        filters["done"] = False
    if args.tag:
        filters["contains_tags"] = args.tag
    if args.search:
        filters["like_text"] = args.search
    for note in notes.list(filters, sort=["done", "text"]):
        print(show(note, notes.status(note["id"])))


def cmd_edit(notes: LocalCollection, args: argparse.Namespace) -> None:
    note = find(notes, args.id)
    notes.update({"id": note["id"], "text": args.text}, patch=True)
    print(f"edited {note['id'][:8]}")


def cmd_done(notes: LocalCollection, args: argparse.Namespace) -> None:
    note = find(notes, args.id)
    notes.update({"id": note["id"], "done": True}, patch=True)
    print(f"done {note['id'][:8]}")


def cmd_rm(notes: LocalCollection, args: argparse.Namespace) -> None:
    note = find(notes, args.id)
    notes.delete(note["id"])
    print(f"removed {note['id'][:8]}")


def cmd_sync(notes: LocalCollection, args: argparse.Namespace) -> None:
    user, _, password = args.user.partition(":")
    # A command line should fail fast when offline: two quick retries, then give up.
    retry = RetryPolicy(retries=2, backoff_factor=0.2)
    with Client(args.server, auth=(user, password), retry=retry) as client:
        # First run: make sure the bucket and the collection exist (no-op afterwards).
        client.create_bucket(args.bucket, if_not_exists=True)
        client.create_collection(args.bucket, COLLECTION, if_not_exists=True)
        result = notes.sync(client, bucket=args.bucket, strategy=Strategy(args.strategy))
    pulled, pushed = result.pulled.counts(), result.pushed.counts()
    print(
        f"synced: {sum(pulled.values())} in, {sum(pushed.values())} out, "
        f"{len(result.resolved)} conflicts settled, {len(result.conflicts)} to resolve"
    )
    for failure in result.errors:
        print(f"refused by the server: {failure.id[:8]}: {failure.error}", file=sys.stderr)


def cmd_conflicts(notes: LocalCollection, args: argparse.Namespace) -> None:
    for conflict in notes.conflicts():
        mine = conflict.local["text"] if conflict.local else "(deleted)"
        theirs = conflict.remote["text"] if conflict.remote else "(deleted)"
        print(f"{conflict.id[:8]}  mine: {mine}  |  theirs: {theirs}")


def cmd_resolve(notes: LocalCollection, args: argparse.Namespace) -> None:
    matches = [c for c in notes.conflicts() if c.id.startswith(args.id)]
    if len(matches) != 1:
        raise SystemExit(f"notes: no single conflict on an id starting with {args.id!r}")
    conflict = matches[0]
    notes.resolve(conflict.id, conflict.local if args.mine else conflict.remote)
    print(f"resolved {conflict.id[:8]}; run sync to publish")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="notes", description="Offline-first notes.")
    env = os.environ.get
    main.add_argument("--db", default=env("NOTES_DB", "notes.db"), help="local SQLite file")
    main.add_argument("--server", default=env("NOTES_SERVER", "http://127.0.0.1:8888/v1"))
    main.add_argument("--user", default=env("NOTES_USER", "me:secret"), help="user:password")
    main.add_argument("--bucket", default=env("NOTES_BUCKET", "notes-app"))
    commands = main.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="write a new note")
    add.add_argument("text")
    add.add_argument("--tag", action="append")
    listing = commands.add_parser("list", help="show notes")
    listing.add_argument("--done", action="store_true")
    listing.add_argument("--todo", action="store_true")
    listing.add_argument("--tag", action="append")
    listing.add_argument("--search")
    edit = commands.add_parser("edit", help="change a note's text")
    edit.add_argument("id")
    edit.add_argument("text")
    for name in ("done", "rm"):
        commands.add_parser(name, help=f"{name} a note").add_argument("id")
    sync = commands.add_parser("sync", help="exchange changes with the server")
    sync.add_argument("--strategy", choices=[s.value for s in Strategy], default="server_wins")
    commands.add_parser("conflicts", help="list conflicts left by sync --strategy manual")
    resolve = commands.add_parser("resolve", help="settle a conflict")
    resolve.add_argument("id")
    side = resolve.add_mutually_exclusive_group(required=True)
    side.add_argument("--mine", action="store_true")
    side.add_argument("--theirs", action="store_true")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = globals()[f"cmd_{args.command}"]
    with LocalStore(args.db) as store:
        try:
            command(store.collection(COLLECTION), args)
        except ClientError as exc:
            print(f"notes: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
