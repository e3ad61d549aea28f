"""The Firefox Reading List service, written on the Nuages toolkit.

Serve it with ``nuages serve --app examples.readinglist:app`` (from the repository root):
articles live at ``/v1/articles`` and ``/v1/articles/<id>``, each user sees only theirs.
"""

from nuages.toolkit import OWNER, Resource, ValidationError, create_app, now_ms

URL = {"type": "string", "pattern": r"^https?://[^\s/?#]+\S*$", "maxLength": 2048}
TITLE = {"type": "string", "minLength": 1, "maxLength": 1024}
NULLABLE_TEXT = {"type": ["string", "null"]}
FIELDS = {
    "type": "object",
    "required": ["url", "title", "added_by"],
    "properties": {
        "url": URL,
        "title": TITLE,
        "added_by": {"type": "string", "minLength": 1},
        "preview": NULLABLE_TEXT,
        "resolved_url": URL,
        "resolved_title": TITLE,
        "excerpt": {"type": "string"},
        "archived": {"type": "boolean"},
        "favorite": {"type": "boolean"},
        "is_article": {"type": "boolean"},
        "unread": {"type": "boolean"},
        "word_count": {"type": ["integer", "null"], "minimum": 0},
        "read_position": {"type": "integer", "minimum": 0},
        "added_on": {"type": "integer"},
        "stored_on": {"type": "integer"},
        "marked_read_by": NULLABLE_TEXT,
        "marked_read_on": {"type": ["integer", "null"]},
    },
}
DEFAULTS = {"preview": None, "excerpt": "", "archived": False, "favorite": False,
            "is_article": True, "unread": True, "word_count": None, "read_position": 0,
            "marked_read_by": None, "marked_read_on": None}  # fmt: skip


def process(new, old, given):
    if isinstance(new.get("title"), str):
        new["title"] = new["title"].strip()
    new.setdefault("resolved_url", new.get("url"))
    new.setdefault("resolved_title", new.get("title"))
    if old and new.get("read_position", 0) < old["read_position"]:
        raise ValidationError("read_position cannot decrease", name="data.read_position")
    if new.get("unread") and old and not old["unread"]:
        new.update(marked_read_by=None, marked_read_on=None, read_position=0)
    elif not new.get("unread") and not (new.get("marked_read_by") or new.get("marked_read_on")):
        raise ValidationError("marked_read_by or marked_read_on is required", name="data.unread")


ARTICLE = Resource(
    name="article", plural="articles", parent=OWNER, schema=FIELDS, defaults=DEFAULTS,
    server_fields=lambda new, old: {"stored_on": now_ms(),
                                    "added_on": old["added_on"] if old else now_ms()},
    read_only_fields=("url",), unique_fields=("url", "resolved_url"), on_unique_conflict="existing",
    methods=frozenset({"GET", "POST", "PATCH", "DELETE"}), process=process,
)  # fmt: skip


def app(settings=None):
    return create_app([ARTICLE], settings)
