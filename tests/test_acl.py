"""The ACL's table and decisions (gearsql.acl), without a server: parsing, globs, identities,
anonymous connections, and the errors a bad file gets."""

from __future__ import annotations

import pytest

from gearsql.acl import AclError, parse_acl, permission_for
from gearsql.protocol import PacketType

ACL = """
# comment
[app-*]
submit = reverse, report.*   # inline comment
admin = no

[worker-1]
work = reverse
       resize.?

[ops.example]
admin = yes

[anonymous]
submit = ping
"""


def test_submit_and_work_follow_the_matching_sections() -> None:
    acl = parse_acl(ACL)
    app = acl.grants(("app-7",))
    assert app.allows("submit", b"reverse")
    assert app.allows("submit", b"report.daily")
    assert not app.allows("submit", b"reports")
    assert not app.allows("work", b"reverse")
    assert not app.admin
    worker = acl.grants(("worker-1", "worker-1.example"))
    assert worker.allows("work", b"reverse")
    assert worker.allows("work", b"resize.a")
    assert not worker.allows("work", b"resize.ab")
    assert not worker.allows("submit", b"reverse")


def test_any_identity_of_a_certificate_may_match_and_grants_add_up() -> None:
    acl = parse_acl(ACL)
    both = acl.grants(("app-1", "ops.example"))
    assert both.admin
    assert both.allows("submit", b"reverse")
    assert parse_acl(ACL).grants(("worker-1.example", "ops.example")).admin


def test_unknown_identities_get_nothing() -> None:
    nobody = parse_acl(ACL).grants(("intruder",))
    assert not nobody.admin
    assert not nobody.allows("submit", b"reverse")
    assert not nobody.allows("work", b"reverse")


def test_anonymous_matches_only_connections_without_a_certificate() -> None:
    acl = parse_acl(ACL + "\n[*]\nsubmit = everything\n")
    anonymous = acl.grants(())
    assert anonymous.allows("submit", b"ping")
    assert not anonymous.allows("submit", b"everything")
    named = acl.grants(("anonymous",))
    assert not named.allows("submit", b"ping")
    assert named.allows("submit", b"everything")


def test_function_names_that_are_not_utf8_are_matched_by_glob() -> None:
    acl = parse_acl("[a]\nsubmit = bin*\n")
    assert acl.grants(("a",)).allows("submit", b"bin\xff\xfe")


def test_packets_the_acl_governs() -> None:
    assert permission_for(PacketType.SUBMIT_JOB) == "submit"
    assert permission_for(PacketType.SUBMIT_JOB_EPOCH) == "submit"
    assert permission_for(PacketType.SUBMIT_REDUCE_JOB_BACKGROUND) == "submit"
    assert permission_for(PacketType.CAN_DO_TIMEOUT) == "work"
    assert permission_for(PacketType.GRAB_JOB) is None
    assert permission_for(PacketType.ECHO_REQ) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[a]\nsubmitt = x\n", "unknown key 'submitt'"),
        ("[a]\nadmin = maybe\n", "admin must be yes or no"),
        ("submit = x\n", "acl.ini: File contains no section headers"),
        ("[a]\nsubmit = x\n[a]\nwork = y\n", "already exists"),
        ("[a\nsubmit = x\n", "acl.ini"),
    ],
)
def test_a_bad_file_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(AclError, match=message.replace(".", r"\.")):
        parse_acl(text, "acl.ini")
