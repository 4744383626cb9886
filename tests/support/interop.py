"""FluxGate from outside Rust: a Python client (grpcio) with stubs generated from proto/ at run
time by grpcio-tools, walking the main flows of the public API.

Usage: interop.py HOST:PORT ADMIN_PASSWORD. Prints "interop: ok" and exits 0 when every step
behaves; raises (exit 1) at the first one that does not.
"""

import glob
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


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


def main():
    addr, admin_password = sys.argv[1], sys.argv[2]
    out = tempfile.mkdtemp()
    generate(out)
    from fluxgate.v1 import approvals_pb2 as ap
    from fluxgate.v1 import approvals_pb2_grpc as ap_grpc
    from fluxgate.v1 import auth_pb2, auth_pb2_grpc
    from fluxgate.v1 import catalog_pb2 as cat
    from fluxgate.v1 import catalog_pb2_grpc as cat_grpc
    from fluxgate.v1 import common_pb2
    from fluxgate.v1 import groups_pb2 as gr
    from fluxgate.v1 import groups_pb2_grpc as gr_grpc
    from fluxgate.v1 import permissions_pb2 as pm
    from fluxgate.v1 import permissions_pb2_grpc as pm_grpc
    from fluxgate.v1 import users_pb2, users_pb2_grpc

    ch = grpc.insecure_channel(addr)
    auth = auth_pb2_grpc.AuthServiceStub(ch)
    users = users_pb2_grpc.UserServiceStub(ch)
    catalog = cat_grpc.CatalogServiceStub(ch)
    groups = gr_grpc.GroupServiceStub(ch)
    perms = pm_grpc.PermissionServiceStub(ch)
    approvals = ap_grpc.ApprovalServiceStub(ch)

    def login(username, password):
        r = auth.Login(auth_pb2.LoginRequest(username=username, password=password))
        return [("authorization", f"Bearer {r.tokens.access_token}")]

    admin = login("admin", admin_password)
    me = auth.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=admin)
    assert me.user.username == "admin", me

    # Bad input: INVALID_ARGUMENT with the rich error detail in the trailers.
    try:
        users.CreateUser(users_pb2.CreateUserRequest(), metadata=admin)
        raise AssertionError("an empty CreateUser was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        trailers = dict(e.trailing_metadata() or ())
        assert "grpc-status-details-bin" in trailers, trailers

    def user(name, role):
        return users.CreateUser(
            users_pb2.CreateUserRequest(
                user=users_pb2.User(
                    username=name,
                    email=f"{name}@example.com",
                    display_name=name.title(),
                    role=role,
                ),
                initial_password="Interop-pass-123",
            ),
            metadata=admin,
        ).user

    rita = user("rita", common_pb2.ROLE_REQUESTER)
    alan = user("alan", common_pb2.ROLE_APPROVER)
    p = catalog.CreatePortfolio(
        cat.CreatePortfolioRequest(portfolio=cat.Portfolio(display_name="Payments")),
        metadata=admin,
    ).portfolio
    app = catalog.CreateApplication(
        cat.CreateApplicationRequest(
            parent=p.name, application=cat.Application(display_name="Checkout")
        ),
        metadata=admin,
    ).application
    env = catalog.CreateEnvironment(
        cat.CreateEnvironmentRequest(
            parent=app.name, environment=cat.Environment(display_name="production")
        ),
        metadata=admin,
    ).environment
    group = groups.CreateGroup(
        gr.CreateGroupRequest(
            parent=p.name,
            group=gr.Group(
                display_name="Operators",
                environment_grants=[
                    gr.EnvironmentGrant(
                        environment=env.name,
                        permissions=[gr.VALUE_PERMISSION_READ, gr.VALUE_PERMISSION_LOCK],
                    )
                ],
            ),
        ),
        metadata=admin,
    ).group
    for member in (rita.name, alan.name):
        _, call = groups.AddGroupMember.with_call(
            gr.AddGroupMemberRequest(group=group.name, member=member), metadata=admin
        )
    revision = int(dict(call.initial_metadata())["x-fluxgate-revision"])

    # A permission check, answered as of the write's revision, with its reason.
    d = perms.CheckPermission(
        pm.CheckPermissionRequest(
            check=pm.PermissionCheck(
                principal=rita.name, permission=pm.PERMISSION_LOCK, resource=env.name
            ),
            min_revision=revision,
        ),
        metadata=admin,
    ).decision
    assert d.allowed and group.name in d.reason, d

    # Four eyes: rita submits, alan approves, the request is approved.
    rita_md = login("rita", "Interop-pass-123")
    cr = approvals.SubmitChangeRequest(
        ap.SubmitChangeRequestRequest(
            change_request=ap.ChangeRequest(
                environment=env.name,
                feature_key="NEW_CHECKOUT",
                kind=ap.CHANGE_KIND_LOCK,
                title="Lock the new checkout",
            )
        ),
        metadata=rita_md,
    ).change_request
    assert cr.state == ap.CHANGE_REQUEST_STATE_PENDING, cr
    try:
        approvals.ApproveChangeRequest(
            ap.ApproveChangeRequestRequest(name=cr.name, revision=cr.revision), metadata=rita_md
        )
        raise AssertionError("the submitter approved their own request")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e
    alan_md = login("alan", "Interop-pass-123")
    done = approvals.ApproveChangeRequest(
        ap.ApproveChangeRequestRequest(name=cr.name, revision=cr.revision, comment="fine"),
        metadata=alan_md,
    ).change_request
    assert done.state == ap.CHANGE_REQUEST_STATE_APPROVED, done
    # The watch stream a CI pipeline blocks on: the approved request at once.
    first = next(iter(approvals.WatchChangeRequest(
        ap.WatchChangeRequestRequest(name=cr.name), metadata=rita_md
    )))
    assert first.change_request.state == ap.CHANGE_REQUEST_STATE_APPROVED, first
    print("interop: ok")


if __name__ == "__main__":
    main()
