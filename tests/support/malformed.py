"""FluxGate under malformed input: a corpus of bad requests built from the method descriptors of
every RPC, sent by a Python gRPC client (grpcio, stubs generated from proto/ at run time by
grpcio-tools) to the real server.

Usage: malformed.py HOST:PORT ADMIN_PASSWORD DATABASE

DATABASE is the server's database: a SQLite file path or a PostgreSQL URL (whose
`options=-csearch_path=...` names the test's schema).

Each method gets a valid base request (real objects set up first, so that a request reaches
validation rather than stopping at a missing parent), and variants of it with one field made
bad, per the mutator tables below; plus an empty request, calls without or with a forged
credential, and raw protobuf bytes that do not decode. Every answer must be a status other
than INTERNAL, UNKNOWN or UNAVAILABLE, and match the case's expectation; input errors are
INVALID_ARGUMENT with a google.rpc.BadRequest naming the field. The database must be the same,
byte for byte, before and after the cases that are refused; cases that may legitimately write
(a valid value after all, or a refusal the server records, such as a failed login) run after
that comparison. The server must answer a health call after every case.

Prints a table of statuses and "malformed: ok N cases" and exits 0 when every case behaves;
otherwise lists every failing case and exits 1.
"""

import time
import collections
import copy
import glob
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import urllib.parse
import uuid

import grpc
import grpc_tools
from google.protobuf import descriptor as D
from google.protobuf import json_format, message_factory
from grpc_tools import protoc

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
PACKAGE = "fluxgate.v1"
TIMEOUT = 15

# Statuses a malformed request must never get.
BAD_CODES = {"INTERNAL", "UNKNOWN", "UNAVAILABLE", "DATA_LOSS", "UNIMPLEMENTED"}
# Legitimate refusals of a well-formed request that names something wrong or missing.
REFUSED = {
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "ALREADY_EXISTS",
    "RESOURCE_EXHAUSTED",
    "OUT_OF_RANGE",
}
# Anything a server may answer to a request that is, after all, acceptable.
SAFE = REFUSED | {"OK"}

PASSWORD = "Corpus-pass-123"
STALE_ETAG = 'W/"999999"'


def generate(out):
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = sorted(glob.glob(os.path.join(ROOT, "fluxgate", "v1", "*.proto")))
    rc = protoc.main(
        ["protoc", f"-I{ROOT}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + files
    )
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc})")
    sys.path.insert(0, out)


# ---------------------------------------------------------------------------------------------
# Protobuf wire format, by hand: to send bytes no generated class would produce, and to read
# google.rpc.Status / BadRequest from grpc-status-details-bin without more generated code.


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(field, wire_type):
    return varint(field << 3 | wire_type)


def length_delimited(field, data):
    return tag(field, 2) + varint(len(data)) + data


def fields(buf):
    """(field number, wire type, value) of each field; value is an int or bytes."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i : i + n], i + n
        elif wt == 1:
            v, i = buf[i : i + 8], i + 8
        elif wt == 5:
            v, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        yield field, wt, v


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def field_violations(trailers):
    """The field names of the BadRequest in grpc-status-details-bin (None: no such detail)."""
    raw = dict(trailers or ()).get("grpc-status-details-bin")
    if raw is None:
        return None
    names = None
    for f, _, any_msg in fields(raw):
        if f != 3:  # google.rpc.Status.details
            continue
        parts = {n: v for n, _, v in fields(any_msg)}
        if not parts.get(1, b"").endswith(b"google.rpc.BadRequest"):
            continue
        names = names or []
        for vf, _, violation in fields(parts.get(2, b"")):
            if vf == 1:  # BadRequest.field_violations
                fv = {n: v for n, _, v in fields(violation)}
                names.append(fv.get(1, b"").decode("utf-8", "replace"))
    return names


# ---------------------------------------------------------------------------------------------
# What a case expects.


class Expect:
    """`codes`: the statuses allowed. `field`: for INVALID_ARGUMENT, a violation must name it
    (a field path such as "portfolio.display_name"; "*" for any non-empty field name; None
    for a refusal that cannot name a field, e.g. bytes that do not decode)."""

    def __init__(self, codes, field="*"):
        self.codes = frozenset(codes)
        self.field = field

    def __repr__(self):
        return f"{'|'.join(sorted(self.codes))}" + (f" naming {self.field}" if self.field else "")


def invalid(field="*"):
    return Expect({"INVALID_ARGUMENT"}, field)


def refused(field="*"):
    return Expect(REFUSED, field)


def safe(field="*"):
    return Expect(SAFE, field)


def names(violations, path):
    """Whether a violation names `path` ("a.b[0].c"), compared without list indexes."""
    if path == "*":
        return any(v for v in violations)

    def strip(s):
        out, depth = [], 0
        for c in s:
            depth += c == "["
            if not depth:
                out.append(c)
            depth -= c == "]"
        return "".join(out)

    want = strip(path)
    # A violation of a list element's field ("checks[2].permission") names the list too.
    return any(
        strip(v) == want or strip(v).endswith("." + want) or strip(v).startswith(want + ".")
        for v in violations
    )


Case = collections.namedtuple(
    "Case",
    "service method category variant request expect metadata may_write stream",
)


# ---------------------------------------------------------------------------------------------
# Field roles and the value mutators for each.

# A string field's role, by name; per-message entries ("Message.field") come first.
ROLE = {
    "name": "ref",
    "parent": "ref",
    "environment": "ref",
    "group": "ref",
    "member": "ref",
    "principal": "ref",
    "resource": "ref",
    "portfolio": "ref",
    "submitter": "ref",
    "application": "ref",
    "page_token": "page_token",
    "refresh_token": "secret_token",
    "token": "secret_token",
    "etag": "etag",
    "request_id": "ident",
    "display_name": "title",
    "title": "title",
    "description": "text",
    "comment": "text",
    "reason": "text",
    "detail": "text",
    "username": "ident",
    "email": "ident",
    "feature_key": "ident",
    "Webhook.url": "ident",
    "event_types": "ident",
    "action": "ident",
    "target_type": "ident",
    "password": "secret",
    "LoginRequest.username": "login_name",
    "LoginRequest.password": "credential",
    "ChangePasswordRequest.current_password": "credential",
    "new_password": "secret",
    "initial_password": "secret",
    "recipient": "filter",
    "query": "filter",
    "ListAuditEventsRequest.actor": "filter",
    "ListAuditEventsRequest.target": "filter",
    "ListAuditEventsRequest.action": "filter",
    "IngestedEvent.actor": "ref",
    "IngestedEvent.target": "text",
    "ListChangeRequestsRequest.environment": "filter_ref",
    "ListChangeRequestsRequest.submitter": "filter_ref",
    "ListGroupsRequest.member": "filter_ref",
    "ListServiceAccountsRequest.portfolio": "filter_ref",
    "LookupResourcesRequest.parent": "filter_ref",
    "GetApprovalMetricsRequest.environment": "filter_ref",
    "ListGroupsRequest.parent": "filter_ref",
    "ListEmailsRequest.recipient": "filter",
}

# Fields the server only ever writes (ignored on input): not mutated.
# References the server checks for shape only: a well-formed name of nothing is accepted.
UNRESOLVED = {
    "IngestedEvent.actor",  # events from other systems may name principals FluxGate lacks
}

# Fields a Create ignores (the server names the new resource) and that are not mutated there.
IGNORED_ON_CREATE = {"name", "etag"}

OUTPUT_ONLY = {
    "create_time",
    "update_time",
    "last_login_time",
    "last_seen_time",
    "decide_time",
    "apply_time",
    "revoke_time",
    "member_count",
    "administrators_group",
    "must_change_password",
    "ChangeRequest.application",
    "ChangeRequest.submitter",
    "ChangeRequest.submitter_display_name",
    "ChangeRequest.state",
    "ChangeRequest.required_approvals",
    "ChangeRequest.approvals",
    "ChangeRequest.peer_review",
    "ChangeRequest.admin_override",
    "ChangeRequest.overridden",
    "ChangeRequest.override_reason",
    "ChangeRequest.reviews",
    "ChangeRequest.revision",
    "ChangeRequest.expire_time",
    "ChangeRequest.applied_by",
    "Group.administrators",
    "User.active",
    "Webhook.cursor_sequence",
    "Webhook.pending_deliveries",
    "Webhook.failed_deliveries",
    "Webhook.previous_secret_expire_time",
    "ApprovalPolicy.update_time",
    "Settings.update_time",
}

NUL, NEWLINE, ESC = "a\x00b", "a\nb", "a\x1b[31mb"
SQL = ["' OR 1=1 --", '"; DROP TABLE users; --']
LOG = "ok\r\nINFO fake line"
BIG_10K = "x" * 10_240
BIG_1M = "x" * 1_000_000

# Per role: mutator name -> (value, expectation); the expectation's field is filled in.
# invalid(): must be INVALID_ARGUMENT naming the field. refused(): any refusal.
# safe(): may also be accepted (a valid value after all, e.g. SQL text as a title).
STRING_MUTATORS = {
    "ref": {
        "empty": ("", invalid),
        "oversized_10k": (BIG_10K, invalid),
        "oversized_1m": (BIG_1M, invalid),
        "nul": (NUL, invalid),
        "newline": (NEWLINE, invalid),
        "escape": (ESC, invalid),
        "sql_or": (SQL[0], invalid),
        "sql_drop": (SQL[1], invalid),
        "log_injection": (LOG, invalid),
        "path_traversal": ("../../etc/passwd", invalid),
        "bad_id": ("portfolios/not-a-uuid", invalid),
        "trailing_segment": (None, invalid),  # the base name + "/extra"
        "unknown_id": (None, refused),  # the base name with fresh uuids: well formed, absent
    },
    "filter_ref": {
        "oversized_10k": (BIG_10K, invalid),
        "oversized_1m": (BIG_1M, invalid),
        "nul": (NUL, invalid),
        "escape": (ESC, invalid),
        "sql_or": (SQL[0], invalid),
        "sql_drop": (SQL[1], invalid),
        "log_injection": (LOG, invalid),
        "bad_id": ("portfolios/not-a-uuid", invalid),
        "unknown_id": (None, safe),
    },
    "page_token": {
        "garbage": ("!!not-a-token!!", invalid),
        "base64_garbage": ("bm90IGEgdG9rZW4", invalid),
        "oversized_10k": (BIG_10K, invalid),
        "nul": (NUL, invalid),
        "sql_or": (SQL[0], invalid),
        "json_wrong_shape": ("eyJhZnRlciI6MX0", invalid),  # {"after":1}
    },
    "secret_token": {
        "empty": ("", invalid),
        "oversized_10k": (BIG_10K, invalid),
        "oversized_1m": (BIG_1M, invalid),
        "nul": (NUL, refused),
        "non_ascii": ("t\u00f6k\u00e9n", refused),
        "sql_or": (SQL[0], refused),
        "log_injection": (LOG, refused),
    },
    "etag": {
        "oversized_10k": (BIG_10K, refused),
        "oversized_1m": (BIG_1M, refused),
        "nul": (NUL, refused),
        "sql_or": (SQL[0], refused),
        "log_injection": (LOG, refused),
    },
    "ident": {
        "empty": ("", invalid),
        "oversized_10k": (BIG_10K, invalid),
        "oversized_1m": (BIG_1M, invalid),
        "nul": (NUL, invalid),
        "newline": (NEWLINE, invalid),
        "escape": (ESC, invalid),
        "sql_or": (SQL[0], invalid),
        "sql_drop": (SQL[1], invalid),
        "log_injection": (LOG, invalid),
    },
    "title": {
        "empty": ("", invalid),
        "blank": ("   ", invalid),
        "oversized_10k": (BIG_10K, invalid),
        "oversized_1m": (BIG_1M, invalid),
        "nul": (NUL, invalid),
        "newline": (NEWLINE, invalid),
        "escape": (ESC, invalid),
        "log_injection": (LOG, invalid),
        "sql_or": (SQL[0], safe),
        "sql_drop": (SQL[1], safe),
    },
    "text": {
        "oversized_10k": (BIG_10K, invalid),
        "oversized_1m": (BIG_1M, invalid),
        "nul": (NUL, invalid),
        "escape": (ESC, invalid),
        "log_injection": (LOG, invalid),
        "sql_or": (SQL[0], safe),
        "sql_drop": (SQL[1], safe),
    },
    # Names and passwords a login compares with what is stored: a value that is merely wrong
    # is a failed (and recorded) login, not invalid input.
    "login_name": {
        "empty": ("", invalid),
        "oversized_10k": (BIG_10K, invalid),
        "oversized_1m": (BIG_1M, invalid),
        "nul": (NUL, invalid),
        "newline": (NEWLINE, invalid),
        "escape": (ESC, invalid),
        "log_injection": (LOG, invalid),
        "sql_or": (SQL[0], refused),
        "sql_drop": (SQL[1], refused),
    },
    "credential": {
        "empty": ("", invalid),
        "oversized_10k": (BIG_10K, invalid),
        "oversized_1m": (BIG_1M, invalid),
        "nul": ("Corpus-pass\x00123", refused),
        "escape": ("Corpus-pass\x1b123", refused),
        "log_injection": ("Corpus-pass-123" + LOG, refused),
        "sql_or": (SQL[0], refused),
    },
    "secret": {
        "empty": ("", invalid),
        "oversized_10k": (BIG_10K, invalid),
        "oversized_1m": (BIG_1M, invalid),
        "nul": ("Corpus-pass\x00123", invalid),
        "escape": ("Corpus-pass\x1b123", invalid),
        "log_injection": ("Corpus-pass-123" + LOG, invalid),
        "sql_or": (SQL[0], refused),
    },
    "filter": {
        "oversized_10k": (BIG_10K, invalid),
        "oversized_1m": (BIG_1M, invalid),
        "nul": (NUL, invalid),
        "escape": (ESC, invalid),
        "log_injection": (LOG, invalid),
        "sql_or": (SQL[0], safe),
        "sql_drop": (SQL[1], safe),
    },
}

# Fields whose empty value is a valid "absent" (so "empty" is a safe case for them).
OPTIONAL = {
    "PermissionCheck.principal",  # empty means the caller
    "LookupResourcesRequest.principal",  # likewise
    "CreateUserRequest.initial_password",  # empty: the user registers through a link
    "Settings.name",  # the only settings resource; may be left out
    "GetSettingsRequest.name",
    "ServiceAccount.portfolio",  # empty: an organisation-wide service account
    "ServiceAccountKey.display_name",  # a default name is given
    "CreateServiceAccountKeyRequest.key",  # every field of the key is optional
    "CancelChangeRequestRequest.reason",
    "ChangeRequest.description",
    "SubmitChangeRequestRequest.request_id",
    "IngestedEvent.actor",
    "IngestedEvent.target",
}


def role_of(msg_desc, f):
    return ROLE.get(f"{msg_desc.name}.{f.name}") or ROLE.get(f.name)


def int_mutators(msg_desc, f):
    """(variant, value, expectation) for an integer field."""
    big = 2**31 - 1 if f.type in (D.FieldDescriptor.TYPE_INT32,) else 2**63 - 1
    if f.name == "page_size":
        return [("negative", -1, invalid), ("int_min", -(2**31), invalid), ("huge", big, safe)]
    if f.name in ("min_revision", "revision"):
        return [("negative", -1, invalid), ("int_min", -(2**63), invalid), ("huge", big, refused)]
    return [("negative", -1, invalid), ("int_min", -(2**31), invalid), ("huge", big, safe)]


def timestamp_mutators():
    return [
        ("before_epoch", {"seconds": -62135596801}, invalid),
        ("after_year_9999", {"seconds": 253402300800}, invalid),
        ("negative_nanos", {"seconds": 1, "nanos": -1}, invalid),
        ("nanos_overflow", {"seconds": 1, "nanos": 1_000_000_000}, invalid),
    ]


def duration_mutators():
    return [
        ("negative", {"seconds": -60}, invalid),
        ("fractional", {"seconds": 1, "nanos": 500}, invalid),
        ("huge", {"seconds": 315_576_000_000}, invalid),
    ]


def mask_mutators(allow_empty):
    out = [
        ("unknown_path", ["no_such_field"], invalid),
        ("empty_path", [""], invalid),
        ("read_only_path", ["create_time"], invalid),
        ("nested_unknown", ["name.nope"], invalid),
        ("sql_path", [SQL[0]], invalid),
        ("many_paths", ["no_such_field"] * 5000, invalid),
    ]
    if not allow_empty:
        out.append(("no_paths", [], invalid))
    return out


# ---------------------------------------------------------------------------------------------


def main():
    addr, admin_password, database = sys.argv[1], sys.argv[2], sys.argv[3]
    out = tempfile.mkdtemp()
    generate(out)
    import importlib

    modules = [
        importlib.import_module(f"fluxgate.v1.{os.path.basename(p)[:-6]}_pb2")
        for p in sorted(glob.glob(os.path.join(ROOT, "fluxgate", "v1", "*.proto")))
    ]
    services = [s for m in modules for s in m.DESCRIPTOR.services_by_name.values()]
    methods = {m.name: m for s in services for m in s.methods}
    ch = grpc.insecure_channel(
        addr,
        options=[("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)],
    )

    def cls(desc):
        return message_factory.GetMessageClass(desc)

    def call(method, request, metadata=(), raw=False):
        """One unary (or server-streaming: first message) call; (code name, message, trailers)."""
        m = methods[method]
        path = f"/{m.containing_service.full_name}/{m.name}"
        ser = None if raw else (lambda x: x.SerializeToString())
        try:
            if m.server_streaming:
                it = ch.unary_stream(path, request_serializer=ser, response_deserializer=None)(
                    request, metadata=metadata, timeout=TIMEOUT
                )
                try:
                    first = next(it, None)
                finally:
                    it.cancel()
                return "OK", first, ()
            resp = ch.unary_unary(path, request_serializer=ser, response_deserializer=None)(
                request, metadata=metadata, timeout=TIMEOUT
            )
            return "OK", resp, ()
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                return "OK", None, ()
            return e.code().name, e.details(), e.trailing_metadata()

    def ok(method, request, token, parse=True):
        code, body, _ = call(method, request, bearer(token))
        if code != "OK":
            raise SystemExit(f"setup: {method} failed: {code} {body}")
        if not parse:
            return None
        return cls(methods[method].output_type).FromString(body)

    def bearer(token):
        return [("authorization", f"Bearer {token}")] if token else []

    def build(method, d):
        return json_format.ParseDict(d, cls(methods[method].input_type)())

    # ---- Set-up: real objects, so that path-valid requests reach validation. ----
    admin = ok("Login", build("Login", {"username": "admin", "password": admin_password}), None)
    admin = admin.tokens.access_token

    def user(name, role, password=PASSWORD):
        req = {"user": {"username": name, "email": f"{name}@example.com", "displayName": name.title(), "role": role}}
        if password:
            req["initialPassword"] = password
        return ok("CreateUser", build("CreateUser", req), admin)

    # A subscription to every event, so that the set-up below leaves deliveries to name (its
    # endpoint does not exist: they fail and wait, which is all the corpus needs).
    hook = ok("CreateWebhook", build("CreateWebhook", {"webhook": {"displayName": "Corpus", "url": "http://127.0.0.1:9/in", "eventTypes": ["*"], "enabled": True}}), admin).webhook
    mallory = user("mallory", "ROLE_REQUESTER").user
    rita = user("rita", "ROLE_REQUESTER").user
    newbie = user("newbie", "ROLE_REQUESTER", password=None)
    p = ok("CreatePortfolio", build("CreatePortfolio", {"portfolio": {"displayName": "Corpus", "description": "d"}}), admin).portfolio
    app = ok("CreateApplication", build("CreateApplication", {"parent": p.name, "application": {"displayName": "Checkout"}}), admin).application
    env = ok("CreateEnvironment", build("CreateEnvironment", {"parent": app.name, "environment": {"displayName": "production"}}), admin).environment
    grants = {
        "environmentGrants": [{"environment": env.name, "permissions": ["VALUE_PERMISSION_READ", "VALUE_PERMISSION_LOCK"]}],
        "applicationGrants": [{"application": app.name, "featurePermission": "FEATURE_PERMISSION_CREATE"}],
    }
    group = ok("CreateGroup", build("CreateGroup", {"parent": p.name, "group": dict(displayName="Operators", **grants)}), admin).group
    ok("AddGroupMember", build("AddGroupMember", {"group": group.name, "member": rita.name}), admin)
    sa = ok("CreateServiceAccount", build("CreateServiceAccount", {"serviceAccount": {"displayName": "Deployer", "role": "ROLE_TEAM_ADMIN", "auditWriter": True}}), admin).service_account
    key = ok("CreateServiceAccountKey", build("CreateServiceAccountKey", {"parent": sa.name, "key": {"displayName": "ci"}}), admin)
    writer = key.secret  # the whole API key, fgk_{id}_{secret}
    rita_token = ok("Login", build("Login", {"username": "rita", "password": PASSWORD}), None).tokens.access_token
    mallory_token = ok("Login", build("Login", {"username": "mallory", "password": PASSWORD}), None).tokens.access_token
    cr = ok(
        "SubmitChangeRequest",
        build("SubmitChangeRequest", {"changeRequest": {"environment": env.name, "featureKey": "NEW_CHECKOUT", "kind": "CHANGE_KIND_LOCK", "title": "Lock it", "description": "d"}, "requestId": "corpus-1"}),
        rita_token,
    ).change_request
    # Real link tokens, so that the password of a confirmation is what gets validated.
    registration_token = newbie.registration_link.token
    ok("RequestPasswordReset", build("RequestPasswordReset", {"email": "mallory@example.com"}), None, parse=False)
    # The link is issued just after the answer (so that both answers cost the same).
    for _ in range(250):
        emails = ok("ListEmails", build("ListEmails", {"recipient": "mallory@example.com"}), admin).emails
        if emails:
            break
        time.sleep(0.02)
    if not emails:
        raise SystemExit("setup: no password-reset email was queued")
    email_name = emails[0].name
    link = re.search(r"reset-password\S*?([A-Za-z0-9_-]{43})", emails[0].body)
    if not link:
        raise SystemExit(f"setup: no reset link in {emails[0].body!r}")
    reset_token = link.group(1)
    # Wait for the first attempt to be recorded (refused at once), then stop the subscription:
    # nothing of it runs while the cases do.
    for _ in range(500):
        deliveries = ok("ListWebhookDeliveries", build("ListWebhookDeliveries", {"parent": hook.name}), admin).deliveries
        if any(d.last_error for d in deliveries):
            break
        time.sleep(0.02)
    if not any(d.last_error for d in deliveries):
        raise SystemExit("setup: no webhook delivery was attempted")
    delivery_name = deliveries[0].name
    hook = ok("UpdateWebhook", build("UpdateWebhook", {"webhook": {"name": hook.name, "enabled": False}, "updateMask": "enabled"}), admin).webhook
    page = ok("ListUsers", build("ListUsers", {"pageSize": 1}), admin)
    other_filter_token = page.next_page_token
    policy = f"{env.name}/approvalPolicy"
    day = {"startTime": "2020-01-01T00:00:00Z", "endTime": "2030-01-01T00:00:00Z"}
    check = {"principal": mallory.name, "permission": "PERMISSION_READ", "resource": env.name}

    # ---- The base request of every method, and who sends it. ----
    # Bases for writes are refused late where possible (a stale etag or revision, a duplicate
    # name, a change request that is not approved), so that a variant that passes validation
    # is still refused and writes nothing.
    def absent(name):
        """`name` with its last id replaced: well formed, naming nothing."""
        return name.rsplit("/", 1)[0] + "/" + str(uuid.uuid4())

    BASES = {
        "Login": ({"username": "nosuchuser", "password": PASSWORD}, None),
        "RefreshSession": ({"refreshToken": "not-a-refresh-token"}, None),
        "Logout": ({}, "victim"),
        "ChangePassword": ({"currentPassword": "Wrong-pass-123", "newPassword": "Another-pass-456"}, "victim"),
        "WhoAmI": ({}, "admin"),
        "GetSecondFactor": ({}, "admin"),
        "BeginTotpEnrollment": ({}, "victim"),
        "ConfirmTotpEnrollment": ({"code": "123456"}, "victim"),
        "RemoveSecondFactor": ({"user": mallory.name}, "admin"),
        "ListSsoProviders": ({}, None),
        "GetNotificationPreferences": ({}, "victim"),
        "UpdateNotificationPreferences": ({"preferences": {"reviewRequests": True, "decisions": True}, "updateMask": "reviewRequests,decisions"}, "victim"),
        "CompleteSsoSignIn": ({"code": "no-such-sign-in-code", "codeVerifier": "v" * 43}, None),
        "CreateUser": ({"user": {"username": "mallory", "email": "mallory2@example.com", "displayName": "M", "role": "ROLE_REQUESTER"}, "initialPassword": PASSWORD}, "admin"),
        "BatchCreateUsers": ({"requests": [{"user": {"username": "newcomer", "email": "newcomer@example.com", "displayName": "N", "role": "ROLE_REQUESTER"}}, {"user": {"username": "mallory", "email": "mallory3@example.com", "displayName": "M", "role": "ROLE_REQUESTER"}}]}, "admin"),
        "GetUser": ({"name": mallory.name}, "admin"),
        "ListUsers": ({"pageSize": 10}, "admin"),
        "UpdateUser": ({"user": {"name": mallory.name, "email": "mallory@example.com", "displayName": "Mallory", "role": "ROLE_REQUESTER", "etag": STALE_ETAG}, "updateMask": "email,displayName,role"}, "admin"),
        "DeactivateUser": ({"name": mallory.name, "etag": STALE_ETAG}, "admin"),
        "ReactivateUser": ({"name": mallory.name, "etag": STALE_ETAG}, "admin"),
        "DeleteUser": ({"name": mallory.name, "etag": STALE_ETAG}, "admin"),
        "GetSettings": ({"name": "settings"}, "admin"),
        "UpdateSettings": ({"settings": {"name": "settings", "passwordPolicy": {"minLength": 12, "maxLength": 128}, "lockoutPolicy": {"maxFailedAttempts": 5, "lockoutDuration": "900s"}, "tokenPolicy": {"accessTokenTtl": "900s", "refreshTokenTtl": "86400s"}, "etag": STALE_ETAG}, "updateMask": "passwordPolicy.minLength,passwordPolicy.maxLength,lockoutPolicy.maxFailedAttempts,lockoutPolicy.lockoutDuration,tokenPolicy.accessTokenTtl,tokenPolicy.refreshTokenTtl"}, "admin"),
        "GetPasswordPolicy": ({}, "admin"),
        "CreatePortfolio": ({"portfolio": {"displayName": "Corpus", "description": "d"}}, "admin"),
        "GetPortfolio": ({"name": p.name}, "admin"),
        "ListPortfolios": ({"pageSize": 10}, "admin"),
        "UpdatePortfolio": ({"portfolio": {"name": p.name, "displayName": "Corpus", "description": "d", "etag": STALE_ETAG}, "updateMask": "displayName,description"}, "admin"),
        "DeletePortfolio": ({"name": p.name, "etag": STALE_ETAG}, "admin"),
        "CreateApplication": ({"parent": p.name, "application": {"displayName": "Checkout", "description": "d"}}, "admin"),
        "GetApplication": ({"name": app.name}, "admin"),
        "ListApplications": ({"parent": p.name, "pageSize": 10}, "admin"),
        "UpdateApplication": ({"application": {"name": app.name, "displayName": "Checkout", "description": "d", "etag": STALE_ETAG}, "updateMask": "displayName,description"}, "admin"),
        "DeleteApplication": ({"name": app.name, "etag": STALE_ETAG}, "admin"),
        "CreateEnvironment": ({"parent": app.name, "environment": {"displayName": "production", "description": "d"}}, "admin"),
        "GetEnvironment": ({"name": env.name}, "admin"),
        "ListEnvironments": ({"parent": app.name, "pageSize": 10}, "admin"),
        "UpdateEnvironment": ({"environment": {"name": env.name, "displayName": "production", "description": "d", "etag": STALE_ETAG}, "updateMask": "displayName,description,production"}, "admin"),
        "DeleteEnvironment": ({"name": env.name, "etag": STALE_ETAG}, "admin"),
        "CreateGroup": ({"parent": p.name, "group": dict(displayName="Operators", description="d", **grants)}, "admin"),
        "GetGroup": ({"name": group.name}, "admin"),
        "ListGroups": ({"parent": p.name, "pageSize": 10, "member": rita.name}, "admin"),
        "UpdateGroup": ({"group": dict(name=group.name, displayName="Operators", description="d", etag=STALE_ETAG, **grants), "updateMask": "displayName,description,applicationGrants,environmentGrants"}, "admin"),
        "DeleteGroup": ({"name": group.name, "etag": STALE_ETAG}, "admin"),
        "AddGroupMember": ({"group": group.name, "member": rita.name}, "admin"),
        "RemoveGroupMember": ({"group": group.name, "member": mallory.name}, "admin"),
        "ListGroupMembers": ({"group": group.name, "pageSize": 10}, "admin"),
        "CreateServiceAccount": ({"serviceAccount": {"displayName": "Deployer", "description": "d", "portfolio": p.name, "role": "ROLE_REQUESTER"}}, "admin"),
        "GetServiceAccount": ({"name": sa.name}, "admin"),
        "ListServiceAccounts": ({"portfolio": p.name, "pageSize": 10}, "admin"),
        "UpdateServiceAccount": ({"serviceAccount": {"name": sa.name, "displayName": "Deployer", "description": "d", "role": "ROLE_TEAM_ADMIN", "active": True, "auditWriter": True, "etag": STALE_ETAG}, "updateMask": "displayName,description,role"}, "admin"),
        "DeleteServiceAccount": ({"name": sa.name, "etag": STALE_ETAG}, "admin"),
        "CreateServiceAccountKey": ({"parent": sa.name, "key": {"displayName": "ci-2", "expireTime": "2099-01-01T00:00:00Z"}}, "admin"),
        "ListServiceAccountKeys": ({"parent": sa.name}, "admin"),
        "RotateServiceAccountKey": ({"name": key.key.name, "gracePeriod": "60s"}, "admin"),
        "RevokeServiceAccountKey": ({"name": key.key.name}, "admin"),
        "CheckPermission": ({"check": check}, "admin"),
        "BatchCheckPermissions": ({"checks": [check, check]}, "admin"),
        "ExplainPermission": ({"check": check}, "admin"),
        "LookupResources": ({"principal": mallory.name, "permission": "PERMISSION_READ", "parent": app.name}, "admin"),
        "LookupPrincipals": ({"permission": "PERMISSION_READ", "resource": env.name, "minRole": "ROLE_REQUESTER"}, "admin"),
        "ListAuditEvents": (dict(pageSize=10, actor=rita.name, target=cr.name, action="change_request.submitted", **day), "admin"),
        "VerifyAuditChain": ({}, "admin"),
        "ExportAuditEvents": (day, "admin"),
        "IngestAuditEvents": ({"events": [{"actor": mallory.name, "action": "feature.evaluated", "targetType": "feature", "target": "NEW_CHECKOUT", "detail": "d", "time": "2024-01-01T00:00:00Z"}]}, "writer"),
        "GetActivityReport": (dict(top=10, **day), "admin"),
        "GetApprovalPolicy": ({"name": policy}, "admin"),
        "UpdateApprovalPolicy": ({"policy": {"name": policy, "requiredApprovals": 1, "peerReview": False, "adminOverride": True, "pendingTtl": "86400s", "etag": STALE_ETAG}, "updateMask": "requiredApprovals,peerReview,adminOverride,pendingTtl"}, "admin"),
        "SubmitChangeRequest": ({"changeRequest": {"environment": env.name, "featureKey": "NEW_CHECKOUT", "kind": "CHANGE_KIND_LOCK", "title": "Lock it", "description": "d", "payload": {"k": "v"}}, "requestId": "corpus-1"}, "rita"),
        "GetChangeRequest": ({"name": cr.name}, "admin"),
        "ListChangeRequests": ({"states": ["CHANGE_REQUEST_STATE_PENDING"], "environment": env.name, "submitter": rita.name, "pageSize": 10}, "admin"),
        "UpdateChangeRequest": ({"changeRequest": {"name": cr.name, "featureKey": "NEW_CHECKOUT", "kind": "CHANGE_KIND_LOCK", "title": "Lock it", "description": "d", "payload": {"k": "v"}, "etag": STALE_ETAG}, "updateMask": "featureKey,kind,payload,title,description"}, "rita"),
        "CancelChangeRequest": ({"name": cr.name, "etag": STALE_ETAG, "reason": "r"}, "rita"),
        "ApproveChangeRequest": ({"name": cr.name, "revision": 999999, "comment": "c"}, "admin"),
        "RejectChangeRequest": ({"name": cr.name, "revision": 999999, "comment": "c"}, "admin"),
        "OverrideChangeRequest": ({"name": cr.name, "revision": 999999, "reason": "r"}, "admin"),
        "MarkChangeRequestApplied": ({"name": cr.name}, "admin"),
        "WatchChangeRequest": ({"name": cr.name}, "admin"),
        "GetApprovalMetrics": (dict(environment=env.name, **day), "admin"),
        "ListEmails": ({"pageSize": 10, "states": ["EMAIL_STATE_HELD"], "recipient": "newbie@example.com"}, "admin"),
        "GetEmail": ({"name": email_name}, "admin"),
        "RetryEmail": ({"name": email_name}, "admin"),
        "CreateWebhook": ({"webhook": {"displayName": "Sink", "url": "https://hooks.invalid/sink", "eventTypes": ["change_request.*", "user.role_changed"], "enabled": True, "format": "WEBHOOK_FORMAT_EVENTS"}, "startAfterSequence": 999999999}, "admin"),
        "GetWebhook": ({"name": hook.name}, "admin"),
        "ListWebhooks": ({}, "admin"),
        "UpdateWebhook": ({"webhook": {"name": hook.name, "displayName": "Corpus", "url": "http://127.0.0.1:9/in", "eventTypes": ["*"], "enabled": True, "etag": STALE_ETAG}, "updateMask": "displayName,url,eventTypes,enabled"}, "admin"),
        "DeleteWebhook": ({"name": hook.name, "etag": STALE_ETAG}, "admin"),
        "RotateWebhookSecret": ({"name": absent(hook.name), "overlap": "3600s"}, "admin"),
        "ListWebhookDeliveries": ({"parent": hook.name, "pageSize": 10, "states": ["WEBHOOK_DELIVERY_STATE_PENDING"]}, "admin"),
        "GetWebhookDelivery": ({"name": delivery_name}, "admin"),
        "RedeliverWebhookDelivery": ({"name": absent(delivery_name)}, "admin"),
        "RewindWebhook": ({"name": hook.name, "afterSequence": 999999999}, "admin"),
        "ListWebhookEventTypes": ({}, "admin"),
        "ResetUserPassword": ({"name": mallory.name, "etag": STALE_ETAG}, "admin"),
        "RequestPasswordReset": ({"email": "nobody@example.com"}, None),
        "ConfirmPasswordReset": ({"token": reset_token, "newPassword": "Another-pass-456"}, None),
        "IssueRegistrationLink": ({"name": newbie.user.name}, "admin"),
        "CompleteRegistration": ({"token": registration_token, "password": "Another-pass-456"}, None),
    }
    missing = set(methods) - set(BASES)
    assert not missing, f"no base request for {sorted(missing)}"
    tokens = {"admin": admin, "victim": mallory_token, "rita": rita_token, "writer": writer, None: None}

    # Methods whose accepted requests write; a refusal these record (a failed login) writes too.
    READS = {
        m
        for m in methods
        if m.startswith(("Get", "List", "Lookup", "Check", "BatchCheck", "Explain", "Verify", "Export", "Watch", "WhoAmI"))
    }
    RECORDS_REFUSALS = {"Login", "ChangePassword", "RequestPasswordReset", "ConfirmPasswordReset", "CompleteRegistration", "RefreshSession"}
    PUBLIC = {"Login", "RefreshSession", "RequestPasswordReset", "ConfirmPasswordReset", "CompleteRegistration", "CompleteSsoSignIn"}
    # Readable without credentials: a forged credential is ignored.
    ANONYMOUS_READS = {"GetPasswordPolicy", "ListSsoProviders"}
    # Fields whose value a refused call may still record (a failed login counts towards lockout).
    CREDENTIALS = {"Login.username", "Login.password", "ChangePassword.current_password"}
    # An empty request is a valid one for these (every field optional).
    EMPTY_OK = {"ListWebhooks", "ListWebhookEventTypes", "ListSsoProviders", "GetNotificationPreferences", "WhoAmI", "GetSecondFactor", "BeginTotpEnrollment", "ListUsers", "GetPasswordPolicy", "ListPortfolios", "VerifyAuditChain", "ListAuditEvents", "ExportAuditEvents", "GetActivityReport", "ListChangeRequests", "GetApprovalMetrics", "ListEmails", "Logout", "ListServiceAccounts", "GetSettings"}

    cases = []

    def add(method, category, variant, request, expect, auth="base", metadata=(), raw=False, field=None):
        m = methods[method]
        base_auth = BASES[method][1]
        who = base_auth if auth == "base" else auth
        allows_write = (
            (method not in READS and "OK" in expect.codes)
            or (method in RECORDS_REFUSALS and bool(expect.codes - {"INVALID_ARGUMENT"}))
            or (f"{method}.{field}" in CREDENTIALS and expect.codes != {"INVALID_ARGUMENT"})
        )
        md = list(bearer(tokens[who])) + list(metadata)
        cases.append(
            Case(m.containing_service.name, method, category, variant, (request, raw), expect, tuple(md), allows_write, m.server_streaming)
        )

    def base(method):
        return build(method, BASES[method][0])

    # ---- Mutations of one field of the base request at a time, from the descriptors. ----
    def walk(msg_desc, prefix, depth):
        """(path, field descriptor, owning message descriptor) of every input field."""
        for f in msg_desc.fields:
            if f.name in OUTPUT_ONLY or f"{msg_desc.name}.{f.name}" in OUTPUT_ONLY:
                continue
            path = prefix + [f.name]
            yield path, f, msg_desc
            if (
                f.type == D.FieldDescriptor.TYPE_MESSAGE
                and f.message_type.full_name.startswith(PACKAGE)
                and depth < 3
            ):
                yield from walk(f.message_type, path, depth + 1)

    def target(msg, path):
        """The message holding the last field of `path` (index 0 of repeated fields)."""
        for name in path[:-1]:
            v = getattr(msg, name)
            if hasattr(v, "add"):
                v = v[0] if len(v) else v.add()
            msg = v
        return msg

    def dotted(path, f_list):
        out = []
        for name, f in zip(path, f_list):
            out.append(name + ("[0]" if f.is_repeated and name != path[-1] else ""))
        return ".".join(out)

    def mutate(method, path, apply):
        req = base(method)
        holder = target(req, path)
        apply(holder, path[-1])
        return req

    def set_scalar(value):
        def apply(holder, name):
            f = holder.DESCRIPTOR.fields_by_name[name]
            if f.is_repeated:
                del getattr(holder, name)[:]
                getattr(holder, name).append(value)
            else:
                setattr(holder, name, value)

        return apply

    def set_message(d):
        def apply(holder, name):
            sub = getattr(holder, name)
            sub.Clear()
            json_format.ParseDict(d, sub) if isinstance(d, str) else [setattr(sub, k, v) for k, v in d.items()]

        return apply

    def covered(rel, masked):
        """Whether the field at `rel` (below the resource) is one an update with `masked` reads."""
        dotted_rel = ".".join(rel)
        return rel[-1] in ("name", "etag") and len(rel) == 1 or any(
            m == dotted_rel or m.startswith(dotted_rel + ".") or dotted_rel.startswith(m + ".") for m in masked
        )

    def fresh_ids(name):
        parts = name.split("/")
        for i in range(1, len(parts), 2):
            try:
                uuid.UUID(parts[i])
                parts[i] = str(uuid.uuid4())
            except ValueError:
                pass
        return "/".join(parts)

    for method in sorted(methods):
        m = methods[method]
        base_req = base(method)
        desc = m.input_type
        mask_field = next((f for f in desc.fields if f.message_type is not None and f.message_type.full_name == "google.protobuf.FieldMask"), None)
        masked = set(getattr(base_req, mask_field.name).paths) if mask_field is not None else None

        def fields_along(path):
            out, md = [], desc
            for name in path:
                f = md.fields_by_name[name]
                out.append(f)
                md = f.message_type
            return out

        for path, f, owner in walk(desc, [], 0):
            where = dotted(path, fields_along(path))
            key = f"{owner.name}.{f.name}"
            created = (len(path) == 2 and method.startswith(("Create", "Submit"))) or (len(path) == 3 and method.startswith("BatchCreate"))
            if created and f.name in IGNORED_ON_CREATE:
                continue
            if len(path) >= 2 and masked is not None and not covered(path[1:], masked):
                continue  # an update ignores fields outside its mask
            T = D.FieldDescriptor
            if f.type == T.TYPE_STRING and not f.is_repeated:
                role = role_of(owner, f)
                if role is None:
                    continue
                current = getattr(target(base(method), path), f.name)
                for variant, (value, expect) in STRING_MUTATORS[role].items():
                    if variant == "trailing_segment":
                        value = (current or "portfolios/" + str(uuid.uuid4())) + "/extra"
                    if variant == "unknown_id":
                        if not current or "/" not in current:
                            continue
                        value = fresh_ids(current)
                        if value == current:
                            continue
                        if key in UNRESOLVED:
                            expect = safe
                    if variant == "empty" and key in OPTIONAL:
                        expect = safe
                    add(method, f"string:{role}", f"{where}={variant}", mutate(method, path, set_scalar(value)), expect(where), field=where)
            elif f.type == T.TYPE_ENUM:
                for variant, value in (("unknown_999", 999), ("negative", -1)):
                    add(method, "enum", f"{where}={variant}", mutate(method, path, set_scalar(value)), invalid(where))
                if f.is_repeated:
                    # A filter of many (repeated) states is merely redundant.
                    big = [1] * 20_000
                    add(method, "repeated", f"{where}=oversized", mutate(method, path, lambda h, n: getattr(h, n).extend(big)), safe(where))
            elif f.type in (T.TYPE_INT32, T.TYPE_INT64) and not f.is_repeated:
                for variant, value, expect in int_mutators(owner, f):
                    add(method, "integer", f"{where}={variant}", mutate(method, path, set_scalar(value)), expect(where))
            elif f.type == T.TYPE_MESSAGE and not f.is_repeated:
                wkt = f.message_type.full_name
                if wkt == "google.protobuf.Timestamp":
                    for variant, value, expect in timestamp_mutators():
                        add(method, "timestamp", f"{where}={variant}", mutate(method, path, set_message(value)), expect(where))
                elif wkt == "google.protobuf.Duration":
                    for variant, value, expect in duration_mutators():
                        add(method, "duration", f"{where}={variant}", mutate(method, path, set_message(value)), expect(where))
                elif wkt == "google.protobuf.FieldMask":
                    allow_empty = m.containing_service.name == "ApprovalService"
                    for variant, value, expect in mask_mutators(allow_empty):
                        add(method, "field_mask", f"{where}={variant}", mutate(method, path, lambda h, n, v=value: (getattr(h, n).Clear(), getattr(h, n).paths.extend(v))), expect(where))
                elif wkt == "google.protobuf.Struct":
                    add(method, "struct", f"{where}=nan", mutate(method, path, lambda h, n: getattr(h, n).update({"x": float("nan")})), invalid(where))
                    add(method, "struct", f"{where}=infinity", mutate(method, path, lambda h, n: getattr(h, n).update({"x": float("inf")})), invalid(where))
                    add(method, "struct", f"{where}=oversized", mutate(method, path, lambda h, n: getattr(h, n).update({f"k{i}": "v" * 50 for i in range(10_000)})), invalid(where))
                    nested = {"x": 1}
                    for _ in range(60):
                        nested = {"x": nested}
                    add(method, "struct", f"{where}=deep", mutate(method, path, lambda h, n, d=nested: getattr(h, n).update(d)), refused(where))
                elif wkt.startswith(PACKAGE) and path == [f.name]:
                    expect = safe if key in OPTIONAL else refused
                    add(method, "missing_message", f"{where}=unset", mutate(method, path, lambda h, n: h.ClearField(n)), expect(where))
            elif f.type == T.TYPE_MESSAGE and f.is_repeated:
                def grow(h, n, count):
                    items = getattr(h, n)
                    if len(items):
                        first = items[0]
                        for _ in range(count):
                            items.add().CopyFrom(first)
                    else:
                        for _ in range(count):
                            items.add()

                add(method, "repeated", f"{where}=oversized", mutate(method, path, lambda h, n: grow(h, n, 5_000)), refused(where))
                add(method, "repeated", f"{where}=empty_element", mutate(method, path, lambda h, n: getattr(h, n).add()), refused(where))
                add(method, "repeated", f"{where}=none", mutate(method, path, lambda h, n: getattr(h, n).__delitem__(slice(None))), refused(where) if path == [f.name] else safe(where))

        # ---- Whole-request cases. ----
        empty = cls(desc)()
        add(method, "request", "empty", empty, safe() if method in EMPTY_OK else (refused() if method in PUBLIC or method == "ChangePassword" else invalid()))
        if method not in PUBLIC:
            unauth = Expect({"OK"} if method in ANONYMOUS_READS else {"UNAUTHENTICATED"}, None)
            add(method, "auth", "no_credentials", base_req, unauth, auth=None)
            add(method, "auth", "forged_bearer", base_req, unauth, auth=None, metadata=[("authorization", "Bearer ' OR 1=1 --")])
            add(method, "auth", "forged_api_key", base_req, unauth, auth=None, metadata=[("authorization", "Bearer fgk_" + "0" * 32 + "_secret")])
            for variant, value in (("-1", "-1"), ("garbage", "' OR 1=1 --")):
                add(method, "metadata", f"min_revision={variant}", base_req, invalid("x-fluxgate-min-revision"), metadata=[("x-fluxgate-min-revision", value)])

        # ---- Raw bytes that are not a valid encoding of the input message. ----
        wire = Expect({"INVALID_ARGUMENT"}, None)
        good = base_req.SerializeToString()
        add(method, "wire", "invalid_wire_type", good + tag(15, 7) + b"\x00\x00", wire, raw=True)
        add(method, "wire", "truncated_length", good + tag(1, 2) + varint(100) + b"abc", wire, raw=True)
        add(method, "wire", "overlong_varint", good + tag(1, 0) + b"\xff" * 11, wire, raw=True)
        add(method, "wire", "random_bytes", bytes.fromhex("ffffffffffffffffff7f0a0b0c"), wire, raw=True)
        first_string = next((f for f in desc.fields if f.type == D.FieldDescriptor.TYPE_STRING and not f.is_repeated), None)
        first_message = next((f for f in desc.fields if f.type == D.FieldDescriptor.TYPE_MESSAGE), None)
        if first_string is not None:
            n = first_string.number
            add(method, "wire", f"{first_string.name}=non_utf8", good + length_delimited(n, b"\xff\xfe\xc3\x28"), wire, raw=True)
            add(method, "wire", f"{first_string.name}=varint_for_string", good + tag(n, 0) + varint(1), wire, raw=True)
        if first_message is not None:
            n = first_message.number
            add(method, "wire", f"{first_message.name}=fixed32_for_message", good + tag(n, 5) + b"\x00\x00\x00\x00", wire, raw=True)
            add(method, "wire", f"{first_message.name}=truncated_submessage", good + length_delimited(n, tag(1, 2) + varint(50) + b"ab"), wire, raw=True)
        ints = [f for f in desc.fields if f.type in (D.FieldDescriptor.TYPE_INT32, D.FieldDescriptor.TYPE_INT64, D.FieldDescriptor.TYPE_ENUM, D.FieldDescriptor.TYPE_BOOL) and not f.is_repeated]
        if ints:
            add(method, "wire", f"{ints[0].name}=string_for_varint", good + length_delimited(ints[0].number, b"12"), wire, raw=True)

    # Page tokens issued for other filters.
    if other_filter_token:
        add("ListUsers", "string:page_token", "page_token=other_filters", build("ListUsers", {"pageSize": 1, "role": "ROLE_APPROVER", "pageToken": other_filter_token}), invalid("page_token"))

    # ---- Run: refused cases, compared against the database, then those that may write. ----
    def snapshot():
        if database.startswith("postgres"):
            u = urllib.parse.urlparse(database)
            q = urllib.parse.parse_qs(u.query)
            schema = next(o.split("=", 1)[1] for o in q.get("options", [""])[0].split() if o.startswith("-csearch_path"))
            url = urllib.parse.urlunparse(u._replace(query=""))
            dump = subprocess.run(
                ["pg_dump", "--data-only", "--no-owner", "--schema", schema, "--dbname", url],
                check=True, capture_output=True, text=True,
            ).stdout
            # Sequences move when a refused insert rolls back (nextval is not transactional):
            # not data; their values are reported apart, below.
            # pg_dump brackets its output with \restrict / \unrestrict and a key it draws anew
            # each run: not data.
            lines = [l for l in dump.splitlines() if not l.startswith(("\\restrict ", "\\unrestrict "))]
            # A table's rows come in their physical order, which any committed UPDATE changes
            # even when it writes the same values (the server's background jobs take the write
            # lock by updating one row of server_state, say): the rows are compared as a set,
            # each named by its table.
            rows, table = [], None
            for l in lines:
                if l.startswith("COPY "):
                    table = l.split(" ")[1]
                elif l == "\\.":
                    table = None
                elif table is not None:
                    rows.append(f"{table}: {l}")
            return sorted(rows), sorted(l for l in lines if l.startswith("SELECT pg_catalog.setval"))
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            return list(conn.iterdump()), []
        finally:
            conn.close()

    def alive():
        code, _, _ = call("WhoAmI", build("WhoAmI", {}), bearer(admin))
        return code == "OK"

    counts = collections.Counter()
    by_service = collections.Counter()
    by_category = collections.Counter()
    failures = []

    # On SQLite, which refused call wrote: PRAGMA data_version moves when another connection
    # commits a change. (PostgreSQL relies on the dump comparison alone.)
    watch = None if database.startswith("postgres") else sqlite3.connect(f"file:{database}?mode=ro", uri=True)

    def data_version():
        return watch.execute("PRAGMA data_version").fetchone()[0] if watch else None

    def run(case):
        request, raw = case.request
        version = data_version()
        code, body, trailers = call(case.method, request, case.metadata, raw=raw)
        wrote = watch is not None and data_version() != version
        counts[code] += 1
        by_service[case.service] += 1
        by_category[case.category.split(":")[0]] += 1
        problem = None
        if code in BAD_CODES:
            problem = f"status {code} is never acceptable"
        elif code not in case.expect.codes:
            problem = f"expected {case.expect}"
        elif code == "INVALID_ARGUMENT" and case.expect.field:
            violations = field_violations(trailers)
            if violations is None:
                problem = "INVALID_ARGUMENT without google.rpc.BadRequest details"
            elif not names(violations, case.expect.field):
                problem = f"no field violation names {case.expect.field!r}: {violations}"
        if wrote and not case.may_write:
            problem = (problem + "; " if problem else "") + "a refused call wrote to the database"
        if not alive():
            problem = (problem + "; " if problem else "") + "server did not answer afterwards"
        if problem:
            message = body if isinstance(body, str) else ""
            failures.append((case, code, message, problem))
        return code

    refusals = [c for c in cases if not c.may_write]
    writers = [c for c in cases if c.may_write]
    before, seq_before = snapshot()
    for c in refusals:
        run(c)
    after, seq_after = snapshot()
    diff = []
    if before != after:
        import difflib

        diff = list(difflib.unified_diff(before, after, "after set-up", "after refused calls", lineterm="", n=0))
    for c in writers:
        run(c)

    per_method = collections.Counter(c.method for c in cases)
    thin = sorted(m for m in methods if per_method[m] < 3)
    print(f"cases: {len(cases)} ({len(refusals)} refused-only, {len(writers)} that may write)")
    fewest = min(methods, key=lambda m: per_method[m])
    print(f"methods: {len(methods)}; fewest cases: {per_method[fewest]} ({fewest}); most: {max(per_method.values())}")
    print("by status:")
    for k, v in counts.most_common():
        print(f"  {k:<22}{v}")
    print("by service:")
    for k, v in sorted(by_service.items()):
        print(f"  {k:<26}{v}")
    print("by category:")
    for k, v in sorted(by_category.items()):
        print(f"  {k:<26}{v}")
    if seq_before != seq_after:
        print("sequences moved (rolled-back inserts; not data):")
        for l in sorted(set(seq_after) - set(seq_before)):
            print(f"  {l}")
    ok_all = not failures and not diff and not thin and len(cases) >= 500
    if failures:
        print(f"FAILING CASES ({len(failures)}):")
        for case, code, message, problem in failures:
            print(f"  {case.service}/{case.method} [{case.category}] {case.variant}: {code} {message[:160]!r}: {problem}")
        summary = collections.Counter((c.category, c.variant.split("=")[-1], code) for c, code, _, _ in failures)
        print("failures by category, variant and status:")
        for (cat, var, code), n in summary.most_common():
            print(f"  {n:>4}  {cat} {var} -> {code}")
    if diff:
        print("DATABASE CHANGED by refused calls:")
        for line in diff[:200]:
            print(f"  {line[:300]}")
    if thin:
        print(f"fewer than 3 cases for {thin}")
    if ok_all:
        print(f"malformed: ok {len(cases)} cases")
    else:
        print(f"malformed: FAILED ({len(failures)} failing cases of {len(cases)}; database {'changed' if diff else 'unchanged'})")
        sys.exit(1)


if __name__ == "__main__":
    main()
