"""The text admin protocol, byte for byte, driven through the core without sockets."""

from __future__ import annotations

import pytest
from coredriver import START, CoreDriver

from gearsql import admin as admin_module
from gearsql.admin import escape_name
from gearsql.core import Session
from gearsql.protocol import PacketType as P

OK = b"OK\r\n"
PERMISSION_DENIED = (
    b"ERR PERMISSION_DENIED Mutating+admin+commands+are+only+accepted+from+loopback\r\n"
)


@pytest.fixture
def d() -> CoreDriver:
    return CoreDriver(version="1.2.3", pid=4242, verbose="INFO")


@pytest.fixture
def admin(d: CoreDriver) -> Session:
    return d.connect()


def incomplete(word: bytes) -> bytes:
    return (
        b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"
        + word
        + b"\r\n"
    )


def unknown(word: bytes) -> bytes:
    return b"ERR UNKNOWN_COMMAND Unknown+server+command" + word + b"\r\n"


# ---------------------------------------------------------------------------- listings


def test_status_with_nothing_known_is_just_the_terminator(d: CoreDriver, admin: Session) -> None:
    assert d.admin(admin, b"status") == b".\n"


def test_status_lists_total_running_and_registered_workers(d: CoreDriver, admin: Session) -> None:
    client = d.connect()
    for _ in range(3):
        d.submit(client, b"resize")
    d.submit(client, b"mail", type_=P.SUBMIT_JOB_BG)
    busy = d.worker(b"resize")
    d.grab_handle(busy)
    d.worker(b"resize", b"thumb")
    assert d.admin(admin, b"status") == b"".join(
        [
            b"resize\t3\t1\t2\n",
            b"mail\t1\t0\t0\n",
            b"thumb\t0\t0\t1\n",
            b".\n",
        ]
    )


def test_status_forgets_a_function_once_it_has_no_worker_and_no_job(
    d: CoreDriver, admin: Session
) -> None:
    worker = d.worker(b"f", b"g")
    client = d.connect()
    d.submit(client, b"g", type_=P.SUBMIT_JOB_BG)
    d.core.disconnect(worker)
    assert d.admin(admin, b"status") == b"g\t1\t0\t0\n.\n"
    d.grab_handle(d.worker(b"g"))
    assert d.admin(admin, b"status") == b"g\t1\t1\t1\n.\n"


def test_prioritystatus_counts_queued_jobs_per_priority(d: CoreDriver, admin: Session) -> None:
    client = d.connect()
    d.submit(client, b"f", type_=P.SUBMIT_JOB_HIGH)
    d.submit(client, b"f", type_=P.SUBMIT_JOB_HIGH_BG)
    d.submit(client, b"f")
    d.submit(client, b"f", type_=P.SUBMIT_JOB_LOW_BG)
    d.submit(client, b"f", type_=P.SUBMIT_JOB_LOW)
    d.submit(client, b"f", type_=P.SUBMIT_JOB_LOW)
    d.submit(client, b"g", type_=P.SUBMIT_JOB_BG)
    worker = d.worker(b"f")
    d.grab_handle(worker)  # a running job is no longer queued
    assert d.admin(admin, b"prioritystatus") == b"f\t1\t1\t3\t1\ng\t0\t1\t0\t0\n.\n"


def test_workers_lists_every_connection_with_id_and_functions(
    d: CoreDriver, admin: Session
) -> None:
    worker = d.worker(b"f1", b"f2")
    d.send(worker, P.SET_CLIENT_ID, b"w-1")
    client = d.connect("10.0.0.9")
    assert d.admin(admin, b"workers") == (
        b"%d 127.0.0.1 - :\n" % admin.fd
        + b"%d 127.0.0.1 w-1 : f1 f2\n" % worker.fd
        + b"%d 10.0.0.9 - :\n" % client.fd
        + b".\n"
    )


def test_workers_forgets_disconnected_sessions(d: CoreDriver, admin: Session) -> None:
    worker = d.worker(b"f")
    d.core.disconnect(worker)
    assert d.admin(admin, b"workers") == b"%d 127.0.0.1 - :\n.\n" % admin.fd


def test_show_jobs_lists_handle_retries_ignored_and_queued(d: CoreDriver, admin: Session) -> None:
    client = d.connect()
    foreground = d.submit(client, b"f")
    background = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    lost = d.worker(b"f")
    d.grab_handle(lost)
    d.core.disconnect(lost)
    assert d.show_jobs(admin) == (foreground + b"\t1\t0\t0\n" + background + b"\t0\t0\t1\n.\n")


def test_show_unique_jobs_lists_one_unique_per_line(d: CoreDriver, admin: Session) -> None:
    client = d.connect()
    d.submit(client, b"f", unique=b"order-1")
    d.submit(client, b"f")
    d.submit(client, b"g", unique=b"order-2", type_=P.SUBMIT_JOB_BG)
    assert d.admin(admin, b"show unique jobs") == b"order-1\norder-2\n.\n"


def test_version_getpid_and_verbose(d: CoreDriver, admin: Session) -> None:
    assert d.admin(admin, b"version") == b"OK 1.2.3\n"
    assert d.admin(admin, b"getpid") == b"OK 4242\n"
    assert d.admin(admin, b"verbose") == b"OK INFO\n"


# ---------------------------------------------------------------------------- maxqueue


def test_maxqueue_one_value_limits_every_priority(d: CoreDriver, admin: Session) -> None:
    d.admin(admin, b"create function f")
    assert d.admin(admin, b"maxqueue f 1") == OK
    client = d.connect()
    handle = d.submit(client, b"f")
    for type_ in (P.SUBMIT_JOB, P.SUBMIT_JOB_HIGH_BG, P.SUBMIT_JOB_LOW):
        d.send(client, type_, b"f", b"", b"data")
        assert d.received(client) == [(P.ERROR, (b"QUEUE_ERROR", b"Job queue is full"))]
    assert d.show_jobs(admin) == handle + b"\t0\t0\t0\n.\n"


def test_maxqueue_counts_running_jobs_and_frees_room_when_they_finish(
    d: CoreDriver, admin: Session
) -> None:
    d.admin(admin, b"create function f")
    d.admin(admin, b"maxqueue f 1")
    client = d.connect()
    handle = d.submit(client, b"f")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(client, P.SUBMIT_JOB, b"f", b"", b"data")
    assert d.received(client) == [(P.ERROR, (b"QUEUE_ERROR", b"Job queue is full"))]
    d.send(worker, P.WORK_COMPLETE, handle, b"")
    d.received(client)
    d.submit(client, b"f")


def test_maxqueue_still_coalesces_onto_a_live_job(d: CoreDriver, admin: Session) -> None:
    d.admin(admin, b"create function f")
    d.admin(admin, b"maxqueue f 1")
    client = d.connect()
    handle = d.submit(client, b"f", unique=b"u")
    assert d.submit(d.connect(), b"f", unique=b"u") == handle


def test_maxqueue_three_values_are_high_normal_low(d: CoreDriver, admin: Session) -> None:
    d.admin(admin, b"create function f")
    assert d.admin(admin, b"maxqueue f 1 2 3") == OK
    client = d.connect()
    full = [(P.ERROR, (b"QUEUE_ERROR", b"Job queue is full"))]
    d.submit(client, b"f", type_=P.SUBMIT_JOB_HIGH)
    d.send(client, P.SUBMIT_JOB_HIGH, b"f", b"", b"x")
    assert d.received(client) == full
    d.submit(client, b"f")
    d.send(client, P.SUBMIT_JOB, b"f", b"", b"x")
    assert d.received(client) == full
    d.submit(client, b"f", type_=P.SUBMIT_JOB_LOW)
    d.send(client, P.SUBMIT_JOB_LOW_BG, b"f", b"", b"x")
    assert d.received(client) == full
    assert d.admin(admin, b"status") == b"f\t3\t0\t0\n.\n"


def test_maxqueue_negative_means_unlimited(d: CoreDriver, admin: Session) -> None:
    d.admin(admin, b"create function f")
    assert d.admin(admin, b"maxqueue f -5") == OK
    client = d.connect()
    for _ in range(10):
        d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)


def test_maxqueue_without_a_value_resets_to_unlimited(d: CoreDriver, admin: Session) -> None:
    d.admin(admin, b"create function f")
    d.admin(admin, b"maxqueue f 1")
    assert d.admin(admin, b"maxqueue f") == OK
    client = d.connect()
    d.submit(client, b"f")
    d.submit(client, b"f")


def test_maxqueue_applies_only_to_existing_functions(d: CoreDriver, admin: Session) -> None:
    assert d.admin(admin, b"maxqueue ghost 1") == OK
    assert d.admin(admin, b"status") == b".\n"
    client = d.connect()
    d.submit(client, b"ghost")
    d.submit(client, b"ghost")


def test_maxqueue_alone_is_an_incomplete_command(d: CoreDriver, admin: Session) -> None:
    assert d.admin(admin, b"maxqueue") == incomplete(b"maxqueue")


# ---------------------------------------------------------------------------- cancel job


def test_cancel_job_fails_it_to_its_clients_and_hides_it_from_workers(
    d: CoreDriver, admin: Session
) -> None:
    first, second = d.connect(), d.connect()
    handle = d.submit(first, b"f", unique=b"u")
    d.submit(second, b"f", unique=b"u")
    assert d.admin(admin, b"cancel job " + handle) == OK
    assert d.received(first) == [(P.WORK_FAIL, (handle,))]
    assert d.received(second) == [(P.WORK_FAIL, (handle,))]
    # Alone in its queue it is let go at once, and f with it (no worker, no job).
    assert d.show_jobs(admin) == b".\n"
    assert d.admin(admin, b"status") == b".\n"
    assert d.admin(admin, b"cancel job " + handle) == b"ERR UNKNOWN_JOB\r\n"

    # Behind live jobs it is listed until a worker meets it, as in gearmand, but counted
    # nowhere: it will never run.
    live = [d.submit(first, b"f") for _ in range(2)]
    handle = d.submit(second, b"f")
    assert d.admin(admin, b"cancel job " + handle) == OK
    assert d.received(second) == [(P.WORK_FAIL, (handle,))]
    assert handle + b"\t0\t1\t0\n" in d.show_jobs(admin)
    assert d.admin(admin, b"status") == b"f\t2\t0\t0\n.\n"
    assert d.admin(admin, b"prioritystatus") == b"f\t0\t2\t0\t0\n.\n"
    worker = d.worker(b"f")
    assert [d.grab_handle(worker) for _ in range(2)] == live
    assert d.grab(worker) == (P.NO_JOB, ())
    assert handle not in d.show_jobs(admin)
    assert d.received(first) == []


def test_cancel_job_of_a_running_job_discards_its_result(d: CoreDriver, admin: Session) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    assert d.admin(admin, b"cancel job " + handle) == OK
    assert d.received(client) == [(P.WORK_FAIL, (handle,))]
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    assert d.received(worker) == []
    assert d.received(client) == []
    assert d.show_jobs(admin) == b".\n"


def test_cancel_job_of_a_delayed_epoch_job_removes_it(d: CoreDriver, admin: Session) -> None:
    client = d.connect()
    d.send(client, P.SUBMIT_JOB_EPOCH, b"f", b"", b"%d" % (int(START) + 60), b"later")
    [(_, (handle,))] = d.received(client)
    worker = d.sleeping_worker(b"f")
    assert d.admin(admin, b"cancel job " + handle) == OK
    assert d.show_jobs(admin) == b".\n"
    d.core.run_timers(START + 60)
    assert d.received(worker) == []
    assert d.grab(worker) == (P.NO_JOB, ())


def test_cancel_job_of_an_unknown_handle(d: CoreDriver, admin: Session) -> None:
    assert d.admin(admin, b"cancel job H:test:404") == b"ERR UNKNOWN_JOB\r\n"


# ---------------------------------------------------------------------------- functions


def test_create_function_lists_it_with_zero_counts(d: CoreDriver, admin: Session) -> None:
    assert d.admin(admin, b"create function resize") == OK
    assert d.admin(admin, b"status") == b"resize\t0\t0\t0\n.\n"
    assert d.admin(admin, b"create function resize") == OK
    assert d.admin(admin, b"status") == b"resize\t0\t0\t0\n.\n"


def test_create_function_refuses_a_name_over_the_limit(d: CoreDriver, admin: Session) -> None:
    name = b"f" * 513
    assert d.admin(admin, b"create function " + name) == b"ERR CREATE_FUNCTION " + name + b"\r\n"
    assert d.admin(admin, b"status") == b".\n"


def test_create_without_a_name_is_an_incomplete_command(d: CoreDriver, admin: Session) -> None:
    assert d.admin(admin, b"create function") == incomplete(b"create")


def test_drop_function_removes_an_idle_function(d: CoreDriver, admin: Session) -> None:
    d.admin(admin, b"create function f")
    d.admin(admin, b"create function g")
    assert d.admin(admin, b"drop function f") == OK
    assert d.admin(admin, b"status") == b"g\t0\t0\t0\n.\n"


def test_drop_function_unknown(d: CoreDriver, admin: Session) -> None:
    assert d.admin(admin, b"drop function nope") == b"ERR function not found\r\n"


def test_drop_function_refused_while_a_worker_is_registered(d: CoreDriver, admin: Session) -> None:
    d.worker(b"f")
    assert d.admin(admin, b"drop function f") == (
        b"ERR there are still connected workers or executing clients\r\n"
    )
    assert d.admin(admin, b"status") == b"f\t0\t0\t1\n.\n"


def test_drop_function_refused_while_a_job_is_running(d: CoreDriver, admin: Session) -> None:
    d.submit(d.connect(), b"f")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.CANT_DO, b"f")
    assert d.admin(admin, b"drop function f") == (
        b"ERR there are still connected workers or executing clients\r\n"
    )


def test_drop_function_with_queued_jobs_succeeds_and_fails_them(
    d: CoreDriver, admin: Session
) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    assert d.admin(admin, b"drop function f") == OK
    assert d.received(client) == [(P.WORK_FAIL, (handle,))]
    assert d.admin(admin, b"status") == b".\n"
    assert d.show_jobs(admin) == b".\n"
    assert d.grab(d.worker(b"f")) == (P.NO_JOB, ())


# ---------------------------------------------------------------------------- grammar and errors


@pytest.mark.parametrize("line", [b"frobnicate", b"shutdown", b"shutdown graceful"])
def test_unknown_commands_and_shutdown_are_refused(
    d: CoreDriver, admin: Session, line: bytes
) -> None:
    assert d.admin(admin, line) == unknown(line.split()[0])


def test_show_alone_is_an_unknown_command(d: CoreDriver, admin: Session) -> None:
    assert d.admin(admin, b"show") == unknown(b"show")


@pytest.mark.parametrize("line", [b"show x", b"show unique", b"show jobs now"])
def test_show_with_other_words_is_unknown_show_arguments(
    d: CoreDriver, admin: Session, line: bytes
) -> None:
    assert d.admin(admin, line) == b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"


def test_command_words_are_case_insensitive(d: CoreDriver, admin: Session) -> None:
    client = d.connect()
    handle = d.submit(client, b"f", unique=b"u")
    assert d.admin(admin, b"STATUS") == b"f\t1\t0\t0\n.\n"
    assert d.admin(admin, b"PriorityStatus") == b"f\t0\t1\t0\t0\n.\n"
    assert d.admin(admin, b"Show Jobs") == handle + b"\t0\t0\t0\t0\tqueued\t-\n.\n"
    assert d.admin(admin, b"SHOW UNIQUE JOBS") == b"u\n.\n"
    assert d.admin(admin, b"VERSION") == b"OK 1.2.3\n"
    assert d.admin(admin, b"MaxQueue f 5") == OK
    assert d.admin(admin, b"Create Function g") == OK
    assert d.admin(admin, b"DROP FUNCTION g") == OK
    assert d.admin(admin, b"CANCEL JOB " + handle) == OK


def test_extra_spaces_between_words_are_ignored(d: CoreDriver, admin: Session) -> None:
    handle = d.submit(d.connect(), b"f")
    assert d.admin(admin, b"  show   jobs ") == handle + b"\t0\t0\t0\t0\tqueued\t-\n.\n"


def test_function_names_that_are_not_utf8_are_escaped_in_listings(
    d: CoreDriver, admin: Session
) -> None:
    client = d.connect()
    d.submit(client, b"before")
    d.submit(client, b"\xff\xfe")
    d.submit(client, b"tab\there new\nline")
    d.submit(client, b"caf\xc3\xa9")
    d.submit(client, b"after")
    assert d.admin(admin, b"status") == b"".join(
        [
            b"before\t1\t0\t0\n",
            b"\\xff\\xfe\t1\t0\t0\n",
            b"tab\\x09here\\x20new\\x0aline\t1\t0\t0\n",
            b"caf\xc3\xa9\t1\t0\t0\n",
            b"after\t1\t0\t0\n",
            b".\n",
        ]
    )
    assert b"\\xff\\xfe\t0\t1\t0\t0\n" in d.admin(admin, b"prioritystatus")
    worker = d.worker(b"\xff\xfe", b"ok")
    assert b"%d 127.0.0.1 - : \\xff\\xfe ok\n" % worker.fd in d.admin(admin, b"workers")


def test_uniques_that_are_not_utf8_are_escaped_in_show_unique_jobs(
    d: CoreDriver, admin: Session
) -> None:
    client = d.connect()
    d.submit(client, b"f", unique=b"a\xffb")
    d.submit(client, b"f", unique=b"back\\slash")
    assert d.admin(admin, b"show unique jobs") == b"a\\xffb\nback\\\\slash\n.\n"


# ---------------------------------------------------------------------------- trust


@pytest.mark.parametrize(
    "line",
    [b"cancel job H:test:1", b"drop function f", b"create function g", b"maxqueue f 1"],
)
def test_untrusted_session_may_not_run_mutating_commands(d: CoreDriver, line: bytes) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    outsider = d.connect("192.0.2.7", trusted=False)
    assert d.admin(outsider, line) == PERMISSION_DENIED
    assert d.received(client) == []
    assert d.admin(outsider, b"status") == b"f\t1\t0\t0\n.\n"
    assert d.show_jobs(outsider) == handle + b"\t0\t0\t0\n.\n"
    # maxqueue was not applied either.
    d.submit(client, b"f")


def test_untrusted_session_may_read_listings(d: CoreDriver) -> None:
    outsider = d.connect("192.0.2.7", trusted=False)
    d.submit(d.connect(), b"f")
    assert d.admin(outsider, b"status") == b"f\t1\t0\t0\n.\n"
    assert d.admin(outsider, b"prioritystatus") == b"f\t0\t1\t0\t0\n.\n"
    assert d.admin(outsider, b"version") == b"OK 1.2.3\n"
    assert d.admin(outsider, b"workers").startswith(b"%d 192.0.2.7 - :\n" % outsider.fd)


def _escaped_as_documented(name: bytes) -> bytes:
    """escape_name's rule, one character (or byte) at a time."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return b"".join(
            b"\\\\" if byte == 0x5C else bytes([byte]) if 0x21 <= byte < 0x7F else b"\\x%02x" % byte
            for byte in name
        )
    return "".join(
        "\\\\"
        if char == "\\"
        else f"\\x{ord(char):02x}"
        if ord(char) <= 0x20 or ord(char) == 0x7F
        else char
        for char in text
    ).encode("utf-8")


def test_escape_name_follows_its_rule_for_every_byte_and_odd_names() -> None:
    # escape_name works through lookup tables (docs/reliability.md case 47): check them.
    names = [bytes([byte]) for byte in range(256)]
    names += [b"plain", b"a b\\c", "é\u0085\x7f x".encode(), b"\xff\xfe \\", bytes(range(256))]
    names += ["".join(map(chr, range(0x20, 0x300))).encode()]
    for name in names:
        assert escape_name(name) == _escaped_as_documented(name), name
        # status and workers take function names through a cache of escaped names
        assert admin_module._shown(name) == admin_module._shown(name) == escape_name(name)
