"""`hoop-mcp approvals` and `hoop-mcp grants` end to end: a real OIDC issuer, a real configuration
file, and the real approval store and audit log (one SQLite file, shared with the server)."""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hoop_mcp.cli import main, parse_ttl
from hoop_mcp.config import load_config
from hoop_mcp.core.approvals import (
    AgentSettings,
    Approval,
    ApprovalService,
    ApprovalState,
    Pending,
    ReviewCall,
)
from hoop_mcp.core.audit import AuditRecord
from hoop_mcp.core.errors import ConfigError, HoopError
from hoop_mcp.core.grants import (
    Grant,
    GrantSet,
    key_id,
    load_signing_key,
    load_verify_key,
    new_grant_id,
    private_key_pem,
    public_key_text,
    sign_grant,
    verify_grant,
)
from hoop_mcp.core.models import Decision, Plan, Principal, ReviewSettings, Verdict, utcnow
from hoop_mcp.stores.sqlite import SqliteAuditLog
from hoop_mcp.stores.sqlite_approvals import SqliteApprovalStore
from tests.support.oidc import OidcIssuer, running_issuer

POLICY = """\
version: 1
rules:
  - id: writes-need-a-dba
    description: Writes need a DBA's approval
    verdict: review
    review: {approver_groups: [dba], ttl_seconds: 600}
    when: {effects: [write]}
"""

AGENTS = AgentSettings(subjects=("agent-*",), groups=("agents",))
REVIEW = ReviewSettings(approver_groups=("dba",), ttl_seconds=600)
DELETE = Plan(
    effect="write",
    effects=("write",),
    command="DELETE",
    relations_written=("public.orders",),
    statement="DELETE FROM orders WHERE id = $1",
    summary="DELETE (write); writes public.orders",
)


@dataclass
class Setup:
    config: Path
    db: Path
    issuer: OidcIssuer
    #: The approvers' private key (approvals.grant_signing_key, from the environment).
    signing_key: Ed25519PrivateKey
    agent_token: str

    @property
    def verify_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    def principal(self, sub: str, *groups: str) -> Principal:
        return Principal(subject=sub, issuer=self.issuer.issuer, groups=groups)

    def token(self, sub: str, *groups: str) -> str:
        return self.issuer.mint(sub=sub, groups=list(groups))


def write_config(
    tmp_path: Path,
    issuer: OidcIssuer,
    *,
    approvals: bool = True,
    signing_key: bool = True,
    verify_keys: tuple[str, ...] = (),
    extra: str = "",
) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    text = (
        "version: 1\n"
        "identity:\n"
        f"  oidc: {{issuer: '{issuer.issuer}', audience: {issuer.audience}}}\n"
        "  token: {env: HOOP_AGENT_TOKEN}\n"
        "policy_files: [policy.yaml]\n"
        "audit: {sqlite_path: audit.db}\n"
        "connections: {shop: {kind: postgres, dsn: {env: SHOP_DSN_NOT_NEEDED_BY_THE_CLI}}}\n"
    )
    if approvals:
        text += "approvals:\n  agents: {subjects: ['agent-*'], groups: [agents]}\n"
        text += (
            "  webhooks: [{url: 'https://hooks.example.test/x', secret: {env: HOOP_WEBHOOK_SECRET_UNSET}}]\n"
        )
        if signing_key:
            text += "  grant_signing_key: {env: HOOP_TEST_GRANT_SIGNING_KEY}\n"
        if verify_keys:
            text += f"  grant_verify_keys: {json.dumps(list(verify_keys))}\n"
        text += extra
    path = tmp_path / "hoop-mcp.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def setup(tmp_path: Path, oidc_issuer: OidcIssuer, monkeypatch: pytest.MonkeyPatch) -> Setup:
    key = Ed25519PrivateKey.generate()
    config = write_config(tmp_path, oidc_issuer, verify_keys=(public_key_text(key.public_key()),))
    agent_token = oidc_issuer.mint(sub="agent-7", groups=["agents"])
    monkeypatch.setenv("HOOP_TEST_GRANT_SIGNING_KEY", private_key_pem(key))
    monkeypatch.setenv("HOOP_AGENT_TOKEN", agent_token)
    monkeypatch.delenv("HOOP_APPROVER_TOKEN", raising=False)
    return Setup(
        config=config, db=tmp_path / "audit.db", issuer=oidc_issuer, signing_key=key, agent_token=agent_token
    )


def review_call(
    setup: Setup, requester: Principal, *, plan: Plan = DELETE, review: ReviewSettings = REVIEW
) -> ReviewCall:
    return ReviewCall(
        call_id="call_" + secrets.token_hex(6),
        session_id="session-1",
        principal=requester,
        tool="query_db",
        connection="shop",
        arguments={"connection": "shop", "sql": "DELETE FROM orders WHERE id = 104"},
        arguments_masked={"connection": "shop", "sql": "DELETE FROM orders WHERE id = 104"},
        arguments_digest="sha256:" + secrets.token_hex(32),
        plan=plan,
        plan_masked=plan,
        decision=Decision(
            verdict=Verdict.REVIEW,
            rule_id="writes-need-a-dba",
            reason="Writes need a DBA's approval",
            review=review,
        ),
    )


async def _with_service(db: Path, fn: Any, grants: GrantSet | None = None) -> Any:
    audit = await SqliteAuditLog.open(db)
    store = await SqliteApprovalStore.open(db)
    try:
        service = ApprovalService(store=store, audit=audit, agents=AGENTS, grants=grants)
        return await fn(service)
    finally:
        await store.close()
        await audit.close()


def request_approval(
    setup: Setup, requester: Principal | None = None, *, review: ReviewSettings = REVIEW
) -> str:
    requester = requester or setup.principal("agent-7", "agents")

    async def run(service: ApprovalService) -> str:
        admitted = await service.admit(review_call(setup, requester, review=review))
        assert isinstance(admitted, Pending)
        return admitted.approval.approval_id

    result: str = anyio.run(_with_service, setup.db, run)
    return result


def stored(setup: Setup, approval_id: str) -> Approval:
    async def run() -> Approval | None:
        store = await SqliteApprovalStore.open(setup.db)
        try:
            return await store.get(approval_id)
        finally:
            await store.close()

    approval = anyio.run(run)
    assert approval is not None
    return approval


def records(setup: Setup) -> list[AuditRecord]:
    async def run() -> list[AuditRecord]:
        audit = await SqliteAuditLog.open(setup.db, create=False)
        try:
            return await audit.records()
        finally:
            await audit.close()

    result: list[AuditRecord] = anyio.run(run)
    return result


def approval_events(setup: Setup) -> list[tuple[str, str | None, str | None]]:
    return [
        (
            r.event.approval.event,
            r.event.approval.actor.subject if r.event.approval.actor else None,
            r.event.approval.channel,
        )
        for r in records(setup)
        if r.event.kind == "approval" and r.event.approval is not None
    ]


def cli(
    setup: Setup,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    token: str | None = None,
    stdin: str | None = None,
) -> tuple[int, str, str]:
    if token is None:
        monkeypatch.delenv("HOOP_APPROVER_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HOOP_APPROVER_TOKEN", token)
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    rc = main([*args, "--config", str(setup.config)])
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------------------- approvals


def test_an_approver_approves_with_their_own_token_and_it_is_recorded(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup)
    rc, out, err = cli(
        setup,
        capsys,
        monkeypatch,
        "approvals",
        "approve",
        approval_id,
        "--reason",
        "ticket OPS-12",
        token=setup.token("alice", "dba"),
    )
    assert rc == 0, err
    assert f"approved: {approval_id}" in out
    approval = stored(setup, approval_id)
    assert approval.state is ApprovalState.APPROVED
    (vote,) = approval.votes
    assert (vote.approver.subject, vote.channel, vote.reason) == ("alice", "cli", "ticket OPS-12")
    assert approval_events(setup) == [("requested", "agent-7", None), ("approved", "alice", "cli")]


def test_a_token_file_works_as_well_as_the_environment(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup)
    token_file = tmp_path / "alice.token"
    token_file.write_text(setup.token("alice", "dba") + "\n")
    rc, out, err = cli(
        setup,
        capsys,
        monkeypatch,
        "approvals",
        "deny",
        approval_id,
        "--reason",
        "not during the sale",
        "--token-file",
        str(token_file),
    )
    assert rc == 0, err
    assert f"denied: {approval_id}" in out
    assert stored(setup, approval_id).state is ApprovalState.DENIED


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("requester", "the requester can never approve their own call"),
        ("agent", "agent principals can never approve"),
        ("agent-in-dba", "agent principals can never approve"),
        ("developer", "you are not an approver for rule 'writes-need-a-dba'"),
    ],
)
def test_an_approval_by_someone_who_may_not_approve_is_refused_and_recorded(
    who: str, expected: str, setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    requester = setup.principal("bob", "dba")
    approval_id = request_approval(setup, requester)
    token = {
        "requester": setup.token("bob", "dba"),
        "agent": setup.token("agent-9", "agents"),
        "agent-in-dba": setup.token("agent-9", "dba"),
        "developer": setup.token("dave", "developers"),
    }[who]
    rc, _, err = cli(
        setup, capsys, monkeypatch, "approvals", "approve", approval_id, "--reason", "ok", token=token
    )
    assert rc == 1
    assert expected in err
    assert "Traceback" not in err
    assert stored(setup, approval_id).state is ApprovalState.PENDING
    assert approval_events(setup)[-1][0] == "vote_refused"


def test_the_agents_own_configured_token_is_refused_even_for_a_human_identity(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup)
    agent_token = setup.token("alice", "dba")  # e.g. the server runs with a human's token
    monkeypatch.setenv("HOOP_AGENT_TOKEN", agent_token)
    rc, _, err = cli(
        setup, capsys, monkeypatch, "approvals", "approve", approval_id, "--reason", "x", token=agent_token
    )
    assert rc == 1
    assert "this is the agent's token" in err
    assert agent_token not in err
    assert stored(setup, approval_id).state is ApprovalState.PENDING


def test_a_token_from_a_foreign_issuer_is_refused(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup)
    with running_issuer() as foreign:
        token = foreign.mint(sub="alice", groups=["dba"])
        rc, _, err = cli(
            setup, capsys, monkeypatch, "approvals", "approve", approval_id, "--reason", "x", token=token
        )
    assert rc == 1
    assert "[auth.failed]" in err
    assert token not in err
    assert stored(setup, approval_id).state is ApprovalState.PENDING


def test_a_token_signed_by_a_foreign_key_under_the_issuers_name_is_refused(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup)
    with running_issuer() as foreign:
        forged = foreign.mint(sub="alice", groups=["dba"], iss=setup.issuer.issuer)
    rc, _, err = cli(
        setup, capsys, monkeypatch, "approvals", "approve", approval_id, "--reason", "x", token=forged
    )
    assert rc == 1
    assert "[auth.failed]" in err
    assert stored(setup, approval_id).state is ApprovalState.PENDING


def test_a_missing_token_is_refused_with_how_to_give_one(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup)
    rc, _, err = cli(setup, capsys, monkeypatch, "approvals", "approve", approval_id, "--reason", "x")
    assert rc == 1
    assert "no approver token" in err
    assert "HOOP_APPROVER_TOKEN" in err


def test_a_token_is_never_accepted_as_a_command_line_value(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["approvals", "list", "--config", str(setup.config), "--token", setup.token("alice", "dba")])
    assert info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_a_token_passed_as_the_token_file_path_is_refused_without_echoing_it(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup)
    token = setup.token("alice", "dba")
    rc, _, err = cli(
        setup,
        capsys,
        monkeypatch,
        "approvals",
        "approve",
        approval_id,
        "--reason",
        "x",
        "--token-file",
        token,
    )
    assert rc == 1
    assert "looks like a token, not a file path" in err
    assert token not in err
    assert stored(setup, approval_id).state is ApprovalState.PENDING


def test_approvals_web_starts_the_page_of_the_configuration(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without approvals.web the page refuses to start: the command reaches run_web and reports it.
    rc, _, err = cli(setup, capsys, monkeypatch, "approvals", "web")
    assert rc == 1
    assert "has no approvals.web section" in err


@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_a_decision_without_a_reason_is_refused(
    verb: str, setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup)
    for extra in ([], ["--reason", "   "]):
        rc, _, err = cli(
            setup,
            capsys,
            monkeypatch,
            "approvals",
            verb,
            approval_id,
            *extra,
            token=setup.token("alice", "dba"),
        )
        assert rc == 1
        assert "a reason is required" in err
    assert stored(setup, approval_id).state is ApprovalState.PENDING


def test_an_unknown_approval_id_is_refused(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    request_approval(setup)  # the database exists
    token = setup.token("alice", "dba")
    for command in (["approve", "apr_nope", "--reason", "x"], ["show", "apr_nope"]):
        rc, _, err = cli(setup, capsys, monkeypatch, "approvals", *command, token=token)
        assert rc == 1
        assert "no approval 'apr_nope'" in err


def test_an_already_decided_approval_cannot_be_decided_again(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup)
    rc, _, err = cli(
        setup,
        capsys,
        monkeypatch,
        "approvals",
        "deny",
        approval_id,
        "--reason",
        "no",
        token=setup.token("alice", "dba"),
    )
    assert rc == 0, err
    rc, _, err = cli(
        setup,
        capsys,
        monkeypatch,
        "approvals",
        "approve",
        approval_id,
        "--reason",
        "yes",
        token=setup.token("carol", "dba"),
    )
    assert rc == 1
    assert f"approval {approval_id} is denied; it can no longer be decided" in err
    assert stored(setup, approval_id).state is ApprovalState.DENIED


def test_a_quorum_of_two_needs_two_different_approvers(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup, review=REVIEW.model_copy(update={"quorum": 2}))
    alice = setup.token("alice", "dba")
    rc, out, _ = cli(
        setup, capsys, monkeypatch, "approvals", "approve", approval_id, "--reason", "a", token=alice
    )
    assert rc == 0
    assert "1 of 2" in out
    rc, _, err = cli(
        setup, capsys, monkeypatch, "approvals", "approve", approval_id, "--reason", "again", token=alice
    )
    assert rc == 1
    assert "you already decided" in err
    rc, out, _ = cli(
        setup,
        capsys,
        monkeypatch,
        "approvals",
        "approve",
        approval_id,
        "--reason",
        "b",
        token=setup.token("carol", "dba"),
    )
    assert rc == 0
    assert stored(setup, approval_id).state is ApprovalState.APPROVED


def test_list_shows_what_the_approver_may_decide_and_all_shows_every_state(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    by_agent = request_approval(setup)
    by_alice = request_approval(setup, setup.principal("alice", "dba"))
    decided = request_approval(setup)
    alice = setup.token("alice", "dba")
    assert (
        cli(setup, capsys, monkeypatch, "approvals", "deny", decided, "--reason", "no", token=alice)[0] == 0
    )
    rc, out, err = cli(setup, capsys, monkeypatch, "approvals", "list", token=alice)
    assert rc == 0, err
    assert by_agent in out
    assert by_alice not in out  # her own request
    assert decided not in out
    rc, out, _ = cli(setup, capsys, monkeypatch, "approvals", "list", "--all", token=alice)
    assert rc == 0
    for approval_id in (by_agent, by_alice, decided):
        assert approval_id in out
    assert "denied" in out
    rc, out, _ = cli(setup, capsys, monkeypatch, "approvals", "list", token=setup.token("dave", "developers"))
    assert rc == 0
    assert by_agent not in out
    assert "no pending approvals" in out
    rc, _, err = cli(setup, capsys, monkeypatch, "approvals", "list", token=setup.token("agent-2", "agents"))
    assert rc == 1
    assert "agent principal" in err


def test_show_prints_the_review(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = request_approval(setup)
    rc, out, err = cli(
        setup, capsys, monkeypatch, "approvals", "show", approval_id, token=setup.token("alice", "dba")
    )
    assert rc == 0, err
    assert f"Approval: {approval_id}" in out
    assert "Rule: writes-need-a-dba" in out
    assert "DELETE FROM orders WHERE id = $1" in out
    assert "State: pending" in out


def test_approvals_commands_need_an_approvals_section(
    tmp_path: Path,
    oidc_issuer: OidcIssuer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(tmp_path, oidc_issuer, approvals=False)
    monkeypatch.setenv("HOOP_APPROVER_TOKEN", oidc_issuer.mint(sub="alice", groups=["dba"]))
    assert main(["approvals", "list", "--config", str(config)]) == 1
    assert "approvals are not configured" in capsys.readouterr().err


def test_approvals_commands_need_the_servers_database(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, _, err = cli(setup, capsys, monkeypatch, "approvals", "list", token=setup.token("alice", "dba"))
    assert rc == 1
    assert "does not exist" in err
    assert not setup.db.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["approvals"],
        ["approvals", "list"],
        ["approvals", "show"],
        ["approvals", "approve"],
        ["approvals", "deny"],
        ["approvals", "web"],
        ["grants"],
        ["grants", "issue"],
        ["grants", "revoke"],
        ["grants", "inspect"],
        ["grants", "keygen"],
    ],
)
def test_every_approvals_and_grants_command_has_help(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*args, "--help"])
    assert info.value.code == 0
    assert "usage: hoop-mcp" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ grants


def issue(
    setup: Setup,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    token: str | None = None,
) -> tuple[int, str, str]:
    return cli(
        setup,
        capsys,
        monkeypatch,
        "grants",
        "issue",
        "--to",
        "ci-deploy-*",
        "--tool",
        "query_db",
        "--connection",
        "shop",
        *args,
        token=token if token is not None else setup.token("alice", "dba"),
    )


def test_an_issued_grant_verifies_and_admits_a_matching_call_exactly_uses_times(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, out, err = issue(
        setup,
        capsys,
        monkeypatch,
        "--effect",
        "write",
        "--relation",
        "public.*",
        "--uses",
        "3",
        "--ttl",
        "30m",
        "--reason",
        "release 4.2 migration",
    )
    assert rc == 0, err
    token = out.strip()
    assert out == token + "\n"  # only the token on stdout
    assert "issued grant" in err
    assert f"signed with key {key_id(setup.verify_key)}" in err
    assert "-----BEGIN" not in out + err
    assert token.startswith("hoopgrant2.")
    key = setup.verify_key
    grant = verify_grant(token, key, now=utcnow())
    assert grant.issuer.subject == "alice"
    assert grant.grantees == ("ci-deploy-*",)
    assert (grant.tool, grant.connection, grant.effects, grant.relations) == (
        "query_db",
        "shop",
        ("write",),
        ("public.*",),
    )
    assert grant.max_uses == 3
    assert timedelta(minutes=29) < grant.expires_at - utcnow() <= timedelta(minutes=30)
    grants = GrantSet(verify_keys=[key], tokens=[token], agents=AGENTS, clock_skew_seconds=30)
    ci = setup.principal("ci-deploy-1", "agents")

    async def run(service: ApprovalService) -> list[str]:
        kinds = []
        for _ in range(4):
            admitted = await service.admit(review_call(setup, ci))
            kinds.append(type(admitted).__name__)
        return kinds

    assert anyio.run(_with_service, setup.db, run, grants) == ["Admitted", "Admitted", "Admitted", "Pending"]
    assert approval_events(setup)[0] == ("grant_issued", "alice", "cli")
    issued = next(
        r.event for r in records(setup) if r.event.approval and r.event.approval.event == "grant_issued"
    )
    assert issued.call_id == grant.grant_id
    assert issued.session_id == "cli"
    assert issued.tool == "query_db"
    assert issued.arguments_digest == grant.digest()
    assert issued.approval is not None
    assert issued.approval.grant_id == grant.grant_id
    assert issued.approval.reason == "release 4.2 migration"


def test_a_server_given_the_issued_grant_admits_the_covered_call(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hoop_mcp.config import load_config
    from hoop_mcp.core.approvals import Admitted
    from hoop_mcp.runtime import open_approvals

    rc, out, err = issue(setup, capsys, monkeypatch, "--reason", "one migration")
    assert rc == 0, err
    setup.config.write_text(setup.config.read_text() + "  grants: {env: HOOP_TEST_GRANTS}\n")
    environ = {  # the server's environment: no signing key in it
        "HOOP_TEST_GRANTS": "  \n" + out + "\n",
        "HOOP_WEBHOOK_SECRET_UNSET": secrets.token_hex(16),
    }

    async def run() -> list[object]:
        config = load_config(setup.config)
        audit = await SqliteAuditLog.open(setup.db)
        approvals = await open_approvals(config, setup.config, environ=environ, audit=audit)
        assert approvals is not None
        try:
            ci = setup.principal("ci-deploy-1", "agents")
            return [await approvals.service.admit(review_call(setup, ci)) for _ in range(2)]
        finally:
            await approvals.store.close()
            await audit.close()

    first, second = anyio.run(run)
    assert isinstance(first, Admitted)
    assert first.evidence.actor is not None
    assert first.evidence.actor.subject == "alice"
    assert isinstance(second, Pending)


def test_an_altered_grant_is_refused_by_the_server_and_by_inspect(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, out, _ = issue(setup, capsys, monkeypatch, "--reason", "one migration")
    assert rc == 0
    prefix, body, mac = out.strip().split(".")
    payload = json.loads(_b64decode(body))
    payload["max_uses"] = 1000
    payload["grantees"] = ["*"]
    altered = (
        f"{prefix}.{_b64encode(json.dumps(payload, sort_keys=True, separators=(',', ':')).encode())}.{mac}"
    )
    with pytest.raises(ConfigError, match="grant #1 of 1 is refused: the grant's signature does not match"):
        GrantSet(verify_keys=[setup.verify_key], tokens=[altered], agents=AGENTS)
    rc, inspected, err = cli(setup, capsys, monkeypatch, "grants", "inspect", stdin=altered)
    assert rc == 1
    assert "signature does not match" in err
    assert inspected == ""


def test_inspect_prints_the_payload_of_a_valid_grant_without_its_signature(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, out, _ = issue(setup, capsys, monkeypatch, "--uses", "2", "--reason", "backfill")
    token = out.strip()
    rc, inspected, err = cli(setup, capsys, monkeypatch, "grants", "inspect", stdin=token + "\n")
    assert rc == 0, err
    payload = json.loads(inspected)
    assert payload["max_uses"] == 2
    assert payload["issuer"]["subject"] == "alice"
    assert token.split(".")[2] not in inspected + err
    assert "uses so far: 0 of 2" in err
    assert f"signature ok (key {key_id(setup.verify_key)})" in err


def test_a_revoked_grant_admits_nothing_and_the_revocation_is_recorded(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, out, _ = issue(setup, capsys, monkeypatch, "--uses", "5", "--reason", "backfill")
    token = out.strip()
    key = setup.verify_key
    grant = verify_grant(token, key, now=utcnow())
    rc, out, err = cli(
        setup,
        capsys,
        monkeypatch,
        "grants",
        "revoke",
        grant.grant_id,
        "--reason",
        "job cancelled",
        token=setup.token("carol", "dba"),
    )
    assert rc == 0, err
    assert f"revoked grant {grant.grant_id}" in out
    grants = GrantSet(verify_keys=[key], tokens=[token], agents=AGENTS)

    async def run(service: ApprovalService) -> object:
        return await service.admit(review_call(setup, setup.principal("ci-deploy-1", "agents")))

    assert isinstance(anyio.run(_with_service, setup.db, run, grants), Pending)
    assert ("grant_revoked", "carol", "cli") in approval_events(setup)
    rc, _, err = cli(setup, capsys, monkeypatch, "grants", "inspect", stdin=token)
    assert rc == 1
    assert "REVOKED" in err


@pytest.mark.parametrize(
    ("args", "token_for", "expected"),
    [
        (["--reason", "x"], ("agent-3", "dba"), "agent principal"),
        ([], ("alice", "dba"), "a reason is required"),
        (["--reason", "x", "--uses", "0"], ("alice", "dba"), "--uses must be between 1 and 1000"),
        (["--reason", "x", "--ttl", "8d"], ("alice", "dba"), "at most 7 days"),
        (["--reason", "x", "--ttl", "soon"], ("alice", "dba"), "is not a duration"),
        (["--reason", "x", "--effect", "rewrite"], ("alice", "dba"), "effects"),
        (["--reason", "x", "--plan-digest", "abc"], ("alice", "dba"), "plan_digest"),
    ],
)
def test_grants_issue_refuses_agents_and_bad_grants(
    args: list[str],
    token_for: tuple[str, str],
    expected: str,
    setup: Setup,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rc, out, err = issue(setup, capsys, monkeypatch, *args, token=setup.token(*token_for))
    assert rc == 1
    assert expected in err
    assert out == ""


def test_grants_issue_refuses_an_unknown_connection(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, out, err = cli(
        setup,
        capsys,
        monkeypatch,
        "grants",
        "issue",
        "--to",
        "ci-*",
        "--tool",
        "query_db",
        "--connection",
        "prod",
        "--reason",
        "x",
        token=setup.token("alice", "dba"),
    )
    assert rc == 1
    assert "no connection 'prod'" in err
    assert out == ""


def test_grants_issue_needs_the_signing_key(
    tmp_path: Path,
    oidc_issuer: OidcIssuer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(tmp_path, oidc_issuer, signing_key=False)
    monkeypatch.setenv("HOOP_APPROVER_TOKEN", oidc_issuer.mint(sub="alice", groups=["dba"]))
    args = ["grants", "issue", "--to", "ci-*", "--tool", "query_db", "--connection", "shop", "--reason", "x"]
    assert main([*args, "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "approvals.grant_signing_key is not configured" in captured.err
    assert "hoop-mcp grants keygen" in captured.err
    assert captured.out == ""


def test_grants_issue_refuses_a_public_key_given_as_the_signing_key_without_echoing_it(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOP_TEST_GRANT_SIGNING_KEY", public_key_text(setup.verify_key))
    rc, out, err = issue(setup, capsys, monkeypatch, "--reason", "x")
    assert rc == 1
    assert (
        "approvals.grant_signing_key (env:HOOP_TEST_GRANT_SIGNING_KEY): this is the public key of "
        "approvals.grant_verify_keys[0], not a private key"
    ) in err
    assert public_key_text(setup.verify_key) not in err
    assert out == ""
    pem_public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA" + "A" * 43 + "=\n-----END PUBLIC KEY-----\n"
    monkeypatch.setenv("HOOP_TEST_GRANT_SIGNING_KEY", pem_public)
    rc, out, err = issue(setup, capsys, monkeypatch, "--reason", "x")
    assert rc == 1
    assert "this is a public key; grant_signing_key needs the private key" in err
    assert "A" * 43 not in err


def test_grants_issue_notes_a_signing_key_the_configured_servers_do_not_trust(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = Ed25519PrivateKey.generate()
    monkeypatch.setenv("HOOP_TEST_GRANT_SIGNING_KEY", private_key_pem(other))
    rc, out, err = issue(setup, capsys, monkeypatch, "--reason", "x")
    assert rc == 0, err
    assert f"key {key_id(other.public_key())} is not in approvals.grant_verify_keys" in err
    rc, _, err = cli(setup, capsys, monkeypatch, "grants", "inspect", stdin=out)
    assert rc == 1
    assert "signed by a key this server does not trust" in err


def test_the_server_verifies_with_public_keys_only_and_a_ci_job_cannot_mint(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CI job runs with the server's configuration and environment: it has the verify key and the
    # grants, but not the signing key.
    setup.config.write_text(setup.config.read_text() + "  grants: {env: HOOP_TEST_GRANTS}\n")
    monkeypatch.delenv("HOOP_TEST_GRANT_SIGNING_KEY")
    rc, out, err = issue(
        setup, capsys, monkeypatch, "--reason", "self-approval", token=setup.token("alice", "dba")
    )
    assert rc == 1
    assert "grant_signing_key" in err
    assert out == ""
    # What it can get at is the public key from the configuration; signing "with" it yields a grant
    # under another kid, which the server refuses at startup.
    config = load_config(setup.config)
    assert config.approvals is not None
    (public,) = config.approvals.verify_keys()
    now = utcnow().replace(microsecond=0)
    forged = Grant(
        grant_id=new_grant_id(),
        issuer=setup.principal("alice", "dba"),
        grantees=("*",),
        tool="query_db",
        connection="shop",
        max_uses=1000,
        issued_at=now,
        not_before=now,
        expires_at=now + timedelta(hours=1),
        reason="approved",
    )
    impostor = Ed25519PrivateKey.from_private_bytes(
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    environ = {
        "HOOP_TEST_GRANTS": sign_grant(forged, impostor),
        "HOOP_WEBHOOK_SECRET_UNSET": secrets.token_hex(16),
    }
    from hoop_mcp.runtime import open_approvals

    async def run() -> None:
        audit = await SqliteAuditLog.open(setup.db)
        try:
            await open_approvals(config, setup.config, environ=environ, audit=audit)
        finally:
            await audit.close()

    with pytest.raises(ConfigError, match=r"grant #1 of 1 is refused: .*does not trust"):
        anyio.run(run)


def test_grants_inspect_needs_verify_keys(
    tmp_path: Path,
    oidc_issuer: OidcIssuer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(tmp_path, oidc_issuer)
    monkeypatch.setattr("sys.stdin", io.StringIO("hoopgrant2.x.y"))
    assert main(["grants", "inspect", "--config", str(config)]) == 1
    assert "approvals.grant_verify_keys is empty" in capsys.readouterr().err


def test_grants_inspect_refuses_an_hmac_grant_with_the_reissue_message(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = "hoopgrant1." + _b64encode(b'{"grant_id":"grt_abcdefghij"}') + "." + _b64encode(b"m" * 32)
    rc, out, err = cli(setup, capsys, monkeypatch, "grants", "inspect", stdin=legacy)
    assert rc == 1
    assert "HMAC grants are no longer accepted" in err
    assert "re-issue" in err
    assert out == ""


# ----------------------------------------------------------------------------- grant configuration


def test_a_configuration_with_the_old_grant_key_fails_saying_what_to_use_instead(
    tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    config = write_config(
        tmp_path, oidc_issuer, signing_key=False, extra="  grant_key: {env: HOOP_GRANT_KEY}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    text = info.value.message
    assert "'grant_key' is no longer supported" in text
    for hint in ("grant_verify_keys", "grant_signing_key", "hoop-mcp grants keygen", "re-issue"):
        assert hint in text
    assert "Extra inputs are not permitted" not in text


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            (private_key_pem(Ed25519PrivateKey.generate()),),
            "approvals.grant_verify_keys[0]: Value error, this is a PRIVATE key; grant_verify_keys takes "
            "public keys only",
        ),
        (
            ("not-a-key",),
            "approvals.grant_verify_keys[0]: Value error, a verify key must be PEM or 32 bytes in base64url",
        ),
        (
            (public_key_text(Ed25519PrivateKey.generate().public_key()), "QUJD"),
            "approvals.grant_verify_keys[1]: Value error, a verify key must be 32 bytes in base64url, got 3",
        ),
        (
            ("-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n",),
            "approvals.grant_verify_keys[0]: Value error, not a valid PEM public key",
        ),
    ],
    ids=["private key", "not base64url key", "second key short", "bad pem"],
)
def test_bad_verify_keys_are_config_errors_naming_the_key_path(
    keys: tuple[str, ...], expected: str, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    config = write_config(tmp_path, oidc_issuer, verify_keys=keys)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert expected in info.value.message
    for key in keys:
        for line in key.splitlines():
            if len(line) >= 16 and not line.startswith("-----"):
                assert line not in info.value.message


def test_grants_without_verify_keys_is_a_config_error(tmp_path: Path, oidc_issuer: OidcIssuer) -> None:
    config = write_config(tmp_path, oidc_issuer, extra="  grants: {env: HOOP_GRANTS}\n")
    with pytest.raises(ConfigError, match="'grants' is set but 'grant_verify_keys' is empty"):
        load_config(config)


def test_a_literal_signing_key_is_refused_as_a_secret_that_must_be_a_reference(
    tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    pem = private_key_pem(Ed25519PrivateKey.generate())
    config = write_config(
        tmp_path, oidc_issuer, signing_key=False, extra=f"  grant_signing_key: {json.dumps(pem)}\n"
    )
    with pytest.raises(ConfigError, match="secrets are references") as info:
        load_config(config)
    assert pem.splitlines()[1] not in info.value.message


def test_verify_keys_in_pem_and_raw_forms_both_load(tmp_path: Path, oidc_issuer: OidcIssuer) -> None:
    first, second = Ed25519PrivateKey.generate().public_key(), Ed25519PrivateKey.generate().public_key()
    pem = first.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    config = write_config(tmp_path, oidc_issuer, verify_keys=(pem, public_key_text(second)))
    approvals = load_config(config).approvals
    assert approvals is not None
    assert [key_id(k) for k in approvals.verify_keys()] == [key_id(first), key_id(second)]


# ------------------------------------------------------------------------------------------ keygen


def _keygen_public_key(err: str) -> str:
    (line,) = [line for line in err.splitlines() if line.strip().startswith('- "')]
    return line.split('"')[1]


def test_keygen_prints_a_private_key_and_its_public_key_line_that_round_trip(
    tmp_path: Path,
    oidc_issuer: OidcIssuer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    capsys.readouterr()
    assert main(["grants", "keygen"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert out.endswith("-----END PRIVATE KEY-----\n")
    signing = load_signing_key(out)
    public_text = _keygen_public_key(err)
    assert "PRIVATE" not in err
    assert out.splitlines()[1] not in err
    verify = load_verify_key(public_text)
    assert key_id(verify) == key_id(signing.public_key())
    assert f"kid {key_id(verify)}" in err
    assert "grant_verify_keys" in err
    # The pair works end to end through the configuration: issue with one, inspect with the other.
    config = write_config(tmp_path, oidc_issuer, verify_keys=(public_text,))
    monkeypatch.setenv("HOOP_TEST_GRANT_SIGNING_KEY", out)
    monkeypatch.setenv("HOOP_AGENT_TOKEN", oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    setup = Setup(
        config=config, db=tmp_path / "audit.db", issuer=oidc_issuer, signing_key=signing, agent_token=""
    )
    rc, token, err = issue(setup, capsys, monkeypatch, "--reason", "keygen round trip")
    assert rc == 0, err
    rc, _, err = cli(setup, capsys, monkeypatch, "grants", "inspect", stdin=token)
    assert rc == 0, err
    assert f"signature ok (key {key_id(verify)})" in err
    # Two runs make two different keys.
    assert main(["grants", "keygen"]) == 0
    again, _ = capsys.readouterr()
    assert again != out


def test_keygen_writes_the_private_key_to_a_new_owner_only_file_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "grant-signing-key.pem"
    capsys.readouterr()
    assert main(["grants", "keygen", "--out", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    pem = path.read_text()
    signing = load_signing_key(pem)
    assert key_id(load_verify_key(_keygen_public_key(err))) == key_id(signing.public_key())
    assert str(path) in err
    assert pem.splitlines()[1] not in err
    assert main(["grants", "keygen", "--out", str(path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert path.read_text() == pem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", timedelta(hours=1)),
        ("30m", timedelta(minutes=30)),
        ("3600", timedelta(hours=1)),
        ("7d", timedelta(days=7)),
    ],
)
def test_ttls_are_read_in_seconds_minutes_hours_or_days(text: str, expected: timedelta) -> None:
    assert parse_ttl(text) == expected


@pytest.mark.parametrize("text", ["", "59s", "8d", "1w", "-1h", "1.5h"])
def test_ttls_outside_a_minute_to_seven_days_are_refused(text: str) -> None:
    with pytest.raises(HoopError):
        parse_ttl(text)


def _b64decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
