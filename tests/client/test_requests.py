"""I/O-free parts: request building, response reading, the error table, the retry policy."""

from __future__ import annotations

import json

import pytest

from nuages.client import (
    BackendUnavailable,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    HTTPError,
    ListParams,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    Request,
    RequestBuilder,
    Response,
    RetryPolicy,
    ServerError,
    TooManyRequests,
    Unauthorized,
)
from nuages.client._errors import error_from_response
from nuages.client._headers import parse_alert, parse_etag, quote_etag
from nuages.client._requests import encode_filters

B = RequestBuilder()


def test_paths_follow_kintos_urls():
    assert B.record_path("b", "c", "r") == "/buckets/b/collections/c/records/r"
    assert B.group_path("b", "g") == "/buckets/b/groups/g"
    assert B.account_path("me@x.org") == "/accounts/me%40x.org"
    assert B.attachment_path("b", "c", "r") == "/buckets/b/collections/c/records/r/attachment"
    assert B.history("b").path == "/buckets/b/history"
    with pytest.raises(ValueError):
        B.bucket_path("")


def test_safe_creation_and_plain_post():
    put = B.create("/buckets", "/buckets/x", {"a": 1}, {"read": ["system.Everyone"]})
    assert (put.method, put.path, dict(put.headers)) == (
        "PUT",
        "/buckets/x",
        {"If-None-Match": "*"},
    )
    assert put.body == {"data": {"a": 1}, "permissions": {"read": ["system.Everyone"]}}
    post = B.create("/buckets", None)
    assert (post.method, post.body, post.is_idempotent) == ("POST", None, False)
    assert B.create("/b", "/b/x", safe=False).headers == {}


def test_preconditions_are_quoted_etags():
    assert B.replace("/x", {"a": 1}, if_match=12).headers == {"If-Match": '"12"'}
    assert B.delete("/x", if_match=5).headers == {"If-Match": '"5"'}
    assert B.get("/x", if_none_match=7).headers == {"If-None-Match": '"7"'}
    assert B.list("/x", if_none_match=None).headers == {}


@pytest.mark.parametrize(
    ("patch_type", "content_type", "body"),
    [
        ("merge", "application/json", {"data": {"a": None}}),
        ("merge-patch", "application/merge-patch+json", {"data": {"a": None}}),
    ],
)
def test_patch_flavours(patch_type, content_type, body):
    request = B.patch("/x", {"a": None}, patch_type=patch_type, if_match=3)
    assert request.headers == {"If-Match": '"3"', "Content-Type": content_type}
    assert request.body == body
    assert not request.is_idempotent


def test_json_patch_takes_operations():
    ops = [{"op": "add", "path": "/data/a", "value": 1}]
    request = B.patch("/x", ops, patch_type="json-patch")
    assert request.body == ops
    assert request.headers["Content-Type"] == "application/json-patch+json"
    with pytest.raises(TypeError):
        B.patch("/x", {"a": 1}, patch_type="json-patch")
    with pytest.raises(TypeError):
        B.patch("/x", ops, patch_type="merge")


def test_permission_patch_may_empty_a_type():
    request = B.patch("/x", permissions={"read": None, "write": ["u"]}, patch_type="merge-patch")
    assert request.body == {"permissions": {"read": None, "write": ["u"]}}


def test_filters_become_typed_query_values():
    assert encode_filters(
        {
            "title": "12",
            "n": 12,
            "done": False,
            "x": None,
            "in_status": ["a", 1],
            "contains_tags": ["a", "b"],
            "like_title": "moz*",
            "_expected": 42,
        }
    ) == [
        ("title", '"12"'),
        ("n", "12"),
        ("done", "false"),
        ("x", "null"),
        ("in_status", '"a",1'),
        ("contains_tags", '["a","b"]'),
        ("like_title", '"moz*"'),
        ("_expected", "42"),
    ]


def test_list_parameters_and_urls():
    params = ListParams({"n": 1}, sort=["-n", "id"], since=5, before=9, fields=["a"], limit=3)
    request = B.list("/buckets/b/collections/c/records", params)
    assert request.url("http://h/v1/") == (
        "http://h/v1/buckets/b/collections/c/records?n=1&_sort=-n%2Cid&_since=5&_before=9"
        "&_fields=a&_limit=3"
    )
    page = B.next_page("http://other/v1/x?_token=abc")
    assert page.url("http://h/v1") == "http://other/v1/x?_token=abc"
    assert B.count("/x", {"a": "b"}).method == "HEAD"


def test_batch_entries():
    requests = [
        B.create("/r", "/r/1", {"a": 1}),
        B.delete_list("/r", {"in_id": ["1", "2"]}, if_match=4),
        B.replace("/r/2", {"b": 2}),
    ]
    batch = B.batch(requests)
    assert batch.path == "/batch"
    assert batch.body == {
        "requests": [
            {
                "method": "PUT",
                "path": "/r/1",
                "headers": {"If-None-Match": "*"},
                "body": {"data": {"a": 1}},
            },
            {
                "method": "DELETE",
                "path": "/r?in_id=%221%22%2C%222%22",
                "headers": {"If-Match": '"4"'},
            },
            {"method": "PUT", "path": "/r/2", "body": {"data": {"b": 2}}},
        ]
    }
    assert batch.is_idempotent  # only conditional writes and PUT/DELETE
    assert not B.batch([B.create("/r", None)]).is_idempotent
    with pytest.raises(ValueError):
        B.next_page("http://h/v1/x").to_batch()


def test_accounts_and_attachments():
    account = B.create_account("alice", "s3cret", {"name": "A"})
    assert (account.method, account.path) == ("PUT", "/accounts/alice")
    assert account.body == {"data": {"name": "A", "password": "s3cret"}}
    upload = B.add_attachment(
        "b", "c", "r", b"bytes", filename="f.txt", mimetype="text/plain", data={"k": 1}
    )
    assert upload.method == "POST"
    assert upload.files == {"attachment": ("f.txt", b"bytes", "text/plain")}
    assert json.loads(upload.form["data"]) == {"k": 1}
    with pytest.raises(ValueError):
        upload.to_batch()


def test_response_accessors():
    response = Response(
        200,
        {"etag": '"42"', "next-page": "http://h/v1/x?_token=t", "total-objects": "7"},
        {"data": [{"id": "a"}], "permissions": {"read": ["x"]}},
    )
    assert response.etag == 42
    assert response.next_page.endswith("_token=t")
    assert response.total == 7
    assert response.data == [{"id": "a"}]
    assert response.permissions == {"read": ["x"]}
    assert response.raise_for_status() is response
    assert Response(304, {}, None).ok


def test_headers_helpers():
    assert quote_etag(5) == '"5"'
    assert parse_etag('"123"') == 123
    assert parse_etag('W/"9"') == 9
    assert parse_etag("abc") is None
    assert parse_alert('{"code": "soft-eol", "message": "m", "url": "u"}')["code"] == "soft-eol"
    assert parse_alert("not json")["message"] == "not json"
    assert parse_alert(None) is None


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (405, MethodNotAllowed),
        (406, BadRequest),
        (409, Conflict),
        (410, Gone),
        (412, PreconditionFailed),
        (415, BadRequest),
        (429, TooManyRequests),
        (500, ServerError),
        (502, ServerError),
        (503, BackendUnavailable),
        (418, HTTPError),
    ],
)
def test_error_table(status, cls):
    error = error_from_response(status, {"errno": 107, "message": "m"}, {"Retry-After": "3"})
    assert type(error) is cls
    assert (error.status, error.errno, error.retry_after) == (status, 107, 3)


def test_precondition_failed_carries_the_existing_object():
    body = {"code": 412, "errno": 114, "details": {"existing": {"id": "r", "last_modified": 9}}}
    error = error_from_response(412, body, {"ETag": '"9"'})
    assert isinstance(error, PreconditionFailed)
    assert error.existing == {"id": "r", "last_modified": 9}
    assert error.timestamp == 9
    assert error_from_response(412, {"errno": 114}).existing is None


def test_bad_request_details_and_gone_alert():
    details = [{"location": "body", "name": "data", "description": "bad"}]
    error = error_from_response(
        400, {"errno": 107, "message": "data in body: bad", "details": details}
    )
    assert error.details == details
    assert "data in body: bad" in str(error)
    gone = error_from_response(410, {"errno": 202}, {"Alert": '{"code": "hard-eol"}'})
    assert isinstance(gone, Gone)
    assert gone.alert == {"code": "hard-eol"}
    assert error_from_response(500, "<html>").errno == 999


def test_retry_policy():
    policy = RetryPolicy(retries=2, backoff_factor=1.0, max_delay=5.0)
    get = Request("GET", "/x")
    post = Request("POST", "/x")
    busy = Response(503, {"retry-after": "3"}, None)
    assert policy.delay_after_response(get, busy, 0) == 3.0
    assert policy.delay_after_response(get, Response(503, {"retry-after": "60"}, None), 0) == 5.0
    assert policy.delay_after_response(get, Response(500, {}, None), 1) == 2.0
    assert policy.delay_after_response(get, Response(503, {"backoff": "4"}, None), 0) == 4.0
    assert policy.delay_after_response(get, busy, 2) is None  # retries exhausted
    assert policy.delay_after_response(get, Response(400, {}, None), 0) is None
    assert policy.delay_after_transport_error(get, 0) == 1.0
    assert policy.delay_after_transport_error(post, 0) is None  # may have been committed
    assert policy.delay_after_transport_error(post, 0, sent=False) == 1.0
    conditional = Request("POST", "/x", headers={"If-None-Match": "*"})
    assert policy.delay_after_transport_error(conditional, 0) == 1.0
    assert RetryPolicy.never().delay_after_response(get, busy, 0) is None
