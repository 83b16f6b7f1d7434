"""The gman_* functions in MariaDB: the install and uninstall SQL, and running them.

MariaDB cannot open a socket from SQL, so nothing here talks to a job server. Every function is
a plain stored routine installed over an ordinary connection (or from ``sql/mysql/``) into one
database, and a sidecar does the Gearman side: the relay (``gearsql relay --dsn mysql://...``).

Objects, all in the installing database:

- ``gman_outbox``: the rows ``gman_do*_background`` write in the caller's transaction. The relay
  submits each one after commit; a rolled-back transaction leaves no row and so no job.
- ``gman_outbox_dead``: outbox rows no job server will take, moved there by the relay with the
  reason; the view ``gman_pipeline`` sums up both tables and ``gman_job_status('outbox:<id>')``
  follows one row.
- ``gman_settings(name, value)``: the settings (:data:`SETTINGS`). Callers get no privilege on
  it or on any table: every function runs ``SQL SECURITY DEFINER``, as the installing account.
- ``gman_calls`` and ``gman_results``: how a foreground ``gman_do*`` waits for its result
  (see below); ``gearsql.bridges.mysql_calls.serve_calls`` is the relay's side.
- the functions; ``--grant-to`` accounts get EXECUTE on the public ones.

MariaDB has no overloading and no default arguments for stored functions, so the optional
third argument ``unique`` of the Gearman UDFs becomes a function of its own: ``gman_do(f, w)``
and ``gman_do_unique(f, w, u)``, ``gman_do_background(f, w)`` and
``gman_do_background_unique(f, w, u)``, and so on for ``_high`` and ``_low``. The two-argument
forms are exactly the old UDF's, so existing triggers work unchanged.

**Foreground calls.** A stored function cannot wait for anything another session writes to a
table the usual way: every table a function touches is locked when the calling statement
starts (prelocking), so a MyISAM or Aria request table stays locked against the relay for the
whole call, and an InnoDB row stays invisible until the statement commits. So ``gman_do``
inserts its request into the InnoDB table ``gman_calls`` *without* committing it; the relay
reads it at READ UNCOMMITTED, takes the named lock ``gearsql.<db>.claim.<id>``, runs the job,
commits the outcome into ``gman_results`` and then takes ``gearsql.<db>.done.<id>``. The
function polls ``IS_USED_LOCK`` of the done lock (named locks are seen by every session at
once), reads its result with a locking read (which sees the latest committed row, whatever the
statement's snapshot), deletes both rows and returns. Nothing of a call is ever committed by
the caller; a killed or failed call is rolled back with its statement. Inside a transaction
(``@@in_transaction``, or autocommit off) the foreground functions refuse: the job would run
even if the transaction rolled back, and the wait would hold the transaction's locks.

Needs MariaDB 10.3 or later (``CREATE OR REPLACE`` routines, ``@@in_transaction``, compound
statements outside routines); MySQL lacks ``@@in_transaction`` and is not supported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gearsql._mysqlurl import connect_config, connector, lock_name
from gearsql._sqlcommon import SETTING_DEFAULTS
from gearsql.protocol import Priority

__all__ = [
    "FUNCTIONS",
    "RELAY_PRIVILEGES",
    "SETTINGS",
    "TABLES",
    "VIEWS",
    "check_account",
    "connect_config",
    "connector",
    "install",
    "install_sql",
    "install_statements",
    "lock_name",
    "uninstall",
    "uninstall_sql",
    "uninstall_statements",
]

#: name -> (default, meaning).
SETTINGS: dict[str, tuple[str, str]] = {
    "servers": (
        SETTING_DEFAULTS["servers"],
        "job servers gman_servers_set accepts (host[:port],...); the relay decides where jobs go",
    ),
    "timeout": (SETTING_DEFAULTS["timeout"], "seconds a foreground gman_do* waits for its result"),
    "poll_interval": ("0.05", "seconds between a waiting gman_do*'s checks for its result"),
    "max_workload": (
        SETTING_DEFAULTS["max_workload"],
        "bytes: a longer workload is an SQL error at call time (0: no limit); the default "
        "fits a job server's default maximum packet of 64 MiB",
    ),
}

#: The tables the install creates, in creation order.
TABLES = ("gman_settings", "gman_outbox", "gman_outbox_dead", "gman_calls", "gman_results")

#: The infix of each priority's function names (gman_do, gman_do_high, gman_do_low), in the
#: order the functions are created.
_PRIORITIES = {
    "" if level is Priority.NORMAL else f"_{level.word}": level
    for level in (Priority.NORMAL, Priority.HIGH, Priority.LOW)
}

#: Public function name -> (argument names, SQL return type).
FUNCTIONS: dict[str, tuple[tuple[str, ...], str]] = {}
for _infix in _PRIORITIES:
    FUNCTIONS[f"gman_do{_infix}"] = (("function", "workload"), "LONGBLOB")
    FUNCTIONS[f"gman_do{_infix}_unique"] = (("function", "workload", "unique"), "LONGBLOB")
for _infix in _PRIORITIES:
    FUNCTIONS[f"gman_do{_infix}_background"] = (
        ("function", "workload"),
        "VARCHAR(32) CHARACTER SET ascii",
    )
    FUNCTIONS[f"gman_do{_infix}_background_unique"] = (
        ("function", "workload", "unique"),
        "VARCHAR(32) CHARACTER SET ascii",
    )
FUNCTIONS["gman_servers_set"] = (("servers",), "TEXT CHARACTER SET utf8mb4")
FUNCTIONS["gman_job_status"] = (("handle",), "TEXT CHARACTER SET utf8mb4")

#: Views (callers granted the functions may read them).
VIEWS = ("gman_pipeline",)

#: Table -> privileges the relay's account gets (``relay_account``): it submits and deletes
#: outbox rows, reads the calls waiting (uncommitted) and writes their results.
RELAY_PRIVILEGES: dict[str, str] = {
    "gman_outbox": "SELECT, UPDATE, DELETE",
    "gman_outbox_dead": "SELECT, INSERT",
    "gman_settings": "SELECT",
    "gman_calls": "SELECT",
    "gman_results": "SELECT, INSERT, UPDATE, DELETE",
}

#: Internal routines (kind, name); callers get no EXECUTE on them.
_INTERNAL = (
    ("PROCEDURE", "_gman_check"),
    ("FUNCTION", "_gman_setting"),
    ("FUNCTION", "_gman_server"),
    ("FUNCTION", "_gman_servers"),
    ("FUNCTION", "_gman_lock_name"),
    ("FUNCTION", "_gman_outbox_insert"),
    ("FUNCTION", "_gman_call"),
)

_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_CREATE_USER"
_DELIMITER = "$$"
_ACCOUNT_PART = r"[A-Za-z0-9_.$%:/-]{1,80}"
_ACCOUNT = re.compile(
    rf"^(?P<q1>['`\"]?)(?P<user>{_ACCOUNT_PART})(?P=q1)"
    rf"(?:@(?P<q2>['`\"]?)(?P<host>{_ACCOUNT_PART})(?P=q2))?$"
)


def check_account(value: str) -> str:
    """``value`` (``'app'@'%'``, ``app@localhost`` or a role name ``app_role``) as it goes into
    a GRANT, quoted; ValueError for anything else (it becomes part of generated SQL)."""
    match = _ACCOUNT.match(value.strip())
    if not match:
        raise ValueError(
            f"account {value!r} is not 'user'@'host' or a role name (letters, digits and "
            "_ . $ - in names; % and : also in hosts)"
        )
    user, host = match.group("user"), match.group("host")
    if host is None:
        return f"`{user}`"
    return f"'{user}'@'{host}'"


def _check_servers(servers: str) -> str:
    from gearsql.bridges import load_library

    load_library().parse_servers(servers)  # ValueError names a bad entry
    return servers


def _literal(value: str) -> str:
    if "\\" in value:
        raise ValueError(f"{value!r}: backslashes are not allowed in settings")
    return "'" + value.replace("'", "''") + "'"


def _check_number(name: str, value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 < number <= 86400:
        raise ValueError(f"{name} must be more than 0 and at most 86400 seconds")
    return value


# ----------------------------------------------------------------------------- the SQL

_TABLE_SQL = {
    "gman_settings": """CREATE TABLE IF NOT EXISTS gman_settings (
    name VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    value VARCHAR(1024) CHARACTER SET utf8mb4 NOT NULL
) ENGINE=InnoDB COMMENT='gearsql settings; only the installing account changes them'""",
    "gman_outbox": """CREATE TABLE IF NOT EXISTS gman_outbox (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    function VARBINARY(512) NOT NULL,
    unique_key VARBINARY(64) NULL,
    workload LONGBLOB NOT NULL,
    priority ENUM('high','normal','low') NOT NULL DEFAULT 'normal'
) ENGINE=InnoDB COMMENT='gearsql: background jobs the relay submits once committed'""",
    "gman_outbox_dead": """CREATE TABLE IF NOT EXISTS gman_outbox_dead (
    id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    created_at TIMESTAMP(6) NOT NULL,
    function VARBINARY(512) NOT NULL,
    unique_key VARBINARY(64) NULL,
    workload LONGBLOB NOT NULL,
    priority ENUM('high','normal','low') NOT NULL DEFAULT 'normal',
    reason VARCHAR(1000) CHARACTER SET utf8mb4 NOT NULL,
    dead_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB COMMENT='gearsql: outbox rows no job server will take, and why'""",
    "gman_calls": """CREATE TABLE IF NOT EXISTS gman_calls (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    function VARBINARY(512) NOT NULL,
    unique_key VARBINARY(64) NULL,
    workload LONGBLOB NOT NULL,
    priority ENUM('high','normal','low') NOT NULL DEFAULT 'normal',
    timeout DOUBLE NOT NULL,
    connection_id BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB COMMENT='gearsql: foreground calls waiting (never committed; read uncommitted)'""",
    "gman_results": """CREATE TABLE IF NOT EXISTS gman_results (
    call_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    status ENUM('complete','fail','exception','error') NOT NULL,
    result LONGBLOB NULL,
    message VARCHAR(400) CHARACTER SET utf8mb4 NULL
) ENGINE=InnoDB COMMENT='gearsql: outcomes of foreground calls, written by the relay'""",
}

_ROUTINE_HEAD = "NOT DETERMINISTIC {access} SQL SECURITY DEFINER\n    COMMENT {comment}"

_CHECK = """CREATE OR REPLACE PROCEDURE _gman_check(
    p_caller VARCHAR(64) CHARACTER SET ascii, p_function LONGBLOB, p_workload LONGBLOB,
    p_unique LONGBLOB)
    {head}
BEGIN
    DECLARE v_message VARCHAR(512) CHARACTER SET utf8mb4 DEFAULT NULL;
    DECLARE v_limit BIGINT DEFAULT _gman_setting('max_workload');
    IF p_function IS NULL THEN
        SET v_message = CONCAT(p_caller, ': the function name is NULL');
    ELSEIF LENGTH(p_function) = 0 THEN
        SET v_message = CONCAT(p_caller, ': the function name is empty');
    ELSEIF LENGTH(p_function) > 512 THEN
        SET v_message = CONCAT(p_caller, ': the function name is longer than 512 bytes (',
                               LENGTH(p_function), ' bytes)');
    ELSEIF INSTR(p_function, X'00') > 0 THEN
        SET v_message = CONCAT(p_caller, ': the function name contains a NUL byte, ',
                               'the protocol''s separator');
    ELSEIF p_workload IS NULL THEN
        SET v_message = CONCAT(p_caller, ': the workload is NULL');
    ELSEIF v_limit > 0 AND LENGTH(p_workload) > v_limit THEN
        SET v_message = CONCAT(p_caller, ': the workload is ', LENGTH(p_workload),
            ' bytes, more than the max_workload setting (', v_limit,
            ' bytes): a job server refuses a packet above its maximum size');
    ELSEIF LENGTH(p_unique) > 64 THEN
        SET v_message = CONCAT(p_caller, ': the unique id is longer than 64 bytes (',
                               LENGTH(p_unique), ' bytes)');
    ELSEIF INSTR(p_unique, X'00') > 0 THEN
        SET v_message = CONCAT(p_caller, ': the unique id contains a NUL byte, ',
                               'the protocol''s separator');
    END IF;
    IF v_message IS NOT NULL THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
END"""

_SETTING = """CREATE OR REPLACE FUNCTION _gman_setting(p_name VARCHAR(64) CHARACTER SET ascii)
    RETURNS VARCHAR(1024) CHARACTER SET utf8mb4
    {head}
BEGIN
    DECLARE v_value VARCHAR(1024) CHARACTER SET utf8mb4 DEFAULT NULL;
    DECLARE v_message VARCHAR(512) CHARACTER SET utf8mb4;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_value = NULL;
    SELECT value INTO v_value FROM gman_settings WHERE name = p_name;
    IF v_value IS NULL THEN
        SET v_message = CONCAT('gearsql: the setting ', p_name,
                               ' is missing from gman_settings (run the install again)');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    IF p_name <> 'servers' AND NOT v_value REGEXP '^[0-9]+([.][0-9]+)?$' THEN
        SET v_message = CONCAT('gearsql: bad setting ', p_name, '=', v_value,
                               ' in gman_settings (a number)');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    RETURN v_value;
END"""

# host[:port] -> 'host:port' ('[v6]:port'), or NULL when it is not an address. The same rules
# as parse_servers in udf/gman.py.
_SERVER = """CREATE OR REPLACE FUNCTION _gman_server(p_item VARCHAR(1024) CHARACTER SET utf8mb4)
    RETURNS VARCHAR(1024) CHARACTER SET utf8mb4
    DETERMINISTIC NO SQL SQL SECURITY DEFINER
    COMMENT 'gearsql: one job server address, normalised'
BEGIN
    DECLARE v_item VARCHAR(1024) CHARACTER SET utf8mb4 DEFAULT TRIM(p_item);
    DECLARE v_host VARCHAR(1024) CHARACTER SET utf8mb4 DEFAULT v_item;
    DECLARE v_port VARCHAR(1024) CHARACTER SET utf8mb4 DEFAULT '4730';
    DECLARE v_rest VARCHAR(1024) CHARACTER SET utf8mb4;
    IF LEFT(v_item, 1) = '[' THEN
        IF LOCATE(']', v_item) = 0 THEN
            RETURN NULL;
        END IF;
        SET v_host = SUBSTRING(v_item, 2, LOCATE(']', v_item) - 2);
        SET v_rest = SUBSTRING(v_item, LOCATE(']', v_item) + 1);
        IF v_rest <> '' THEN
            IF LEFT(v_rest, 1) <> ':' THEN
                RETURN NULL;
            END IF;
            SET v_port = SUBSTRING(v_rest, 2);
        END IF;
    ELSEIF LENGTH(v_item) - LENGTH(REPLACE(v_item, ':', '')) = 1 THEN
        SET v_host = SUBSTRING_INDEX(v_item, ':', 1);
        SET v_port = SUBSTRING_INDEX(v_item, ':', -1);
    END IF;
    IF v_host = '' OR NOT v_port REGEXP '^[0-9]{{1,5}}$'
       OR CAST(v_port AS UNSIGNED) NOT BETWEEN 1 AND 65535 THEN
        RETURN NULL;
    END IF;
    IF LOCATE(':', v_host) > 0 THEN
        RETURN CONCAT('[', v_host, ']:', CAST(v_port AS UNSIGNED));
    END IF;
    RETURN CONCAT(v_host, ':', CAST(v_port AS UNSIGNED));
END"""

# 'a, b:1,,a' -> 'a:4730,b:1' (FIND_IN_SET form), or an error naming the first bad entry.
_SERVERS = """CREATE OR REPLACE FUNCTION _gman_servers(
    p_caller VARCHAR(64) CHARACTER SET ascii, p_list TEXT CHARACTER SET utf8mb4)
    RETURNS TEXT CHARACTER SET utf8mb4
    DETERMINISTIC NO SQL SQL SECURITY DEFINER
    COMMENT 'gearsql: a job server list, normalised'
BEGIN
    DECLARE v_count INT DEFAULT LENGTH(p_list) - LENGTH(REPLACE(p_list, ',', '')) + 1;
    DECLARE v_index INT DEFAULT 1;
    DECLARE v_item VARCHAR(1024) CHARACTER SET utf8mb4;
    DECLARE v_server VARCHAR(1024) CHARACTER SET utf8mb4;
    DECLARE v_out TEXT CHARACTER SET utf8mb4 DEFAULT '';
    DECLARE v_message VARCHAR(512) CHARACTER SET utf8mb4;
    WHILE v_index <= v_count DO
        SET v_item = TRIM(SUBSTRING_INDEX(SUBSTRING_INDEX(p_list, ',', v_index), ',', -1));
        IF v_item <> '' THEN
            SET v_server = _gman_server(v_item);
            IF v_server IS NULL THEN
                SET v_message = CONCAT(p_caller, ': bad job server address ''',
                                       LEFT(v_item, 200), '''');
                SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
            END IF;
            IF FIND_IN_SET(v_server, v_out) = 0 THEN
                SET v_out = IF(v_out = '', v_server, CONCAT(v_out, ',', v_server));
            END IF;
        END IF;
        SET v_index = v_index + 1;
    END WHILE;
    IF v_out = '' THEN
        SET v_message = CONCAT(p_caller, ': the job server list is empty');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    RETURN v_out;
END"""

_SERVERS_SET = """CREATE OR REPLACE FUNCTION gman_servers_set(servers TEXT CHARACTER SET utf8mb4)
    RETURNS TEXT CHARACTER SET utf8mb4
    {head}
BEGIN
    DECLARE v_allowed TEXT CHARACTER SET utf8mb4;
    DECLARE v_wanted TEXT CHARACTER SET utf8mb4;
    DECLARE v_count INT;
    DECLARE v_index INT DEFAULT 1;
    DECLARE v_server VARCHAR(1024) CHARACTER SET utf8mb4;
    DECLARE v_message VARCHAR(512) CHARACTER SET utf8mb4;
    IF servers IS NULL THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'gman_servers_set: the server list is NULL';
    END IF;
    SET v_allowed = _gman_servers('gearsql: bad setting servers in gman_settings',
                                  _gman_setting('servers'));
    SET v_wanted = _gman_servers('gman_servers_set', servers);
    SET v_count = LENGTH(v_wanted) - LENGTH(REPLACE(v_wanted, ',', '')) + 1;
    WHILE v_index <= v_count DO
        SET v_server = SUBSTRING_INDEX(SUBSTRING_INDEX(v_wanted, ',', v_index), ',', -1);
        IF FIND_IN_SET(v_server, v_allowed) = 0 THEN
            SET v_message = CONCAT('gman_servers_set: job server ', LEFT(v_server, 200),
                                   ' is not allowed (allowed: ', LEFT(v_allowed, 200),
                                   '; the installing account sets them in gman_settings)');
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
        END IF;
        SET v_index = v_index + 1;
    END WHILE;
    RETURN v_wanted;
END"""

_LOCK_NAME = """CREATE OR REPLACE FUNCTION _gman_lock_name(
    p_kind VARCHAR(8) CHARACTER SET ascii, p_id BIGINT UNSIGNED)
    RETURNS VARCHAR(64) CHARACTER SET ascii
    DETERMINISTIC NO SQL SQL SECURITY DEFINER
    COMMENT 'gearsql: the named lock of a foreground call (see gearsql.bridges.mysql.lock_name)'
RETURN CONCAT('gearsql.', LEFT(SHA1(DATABASE()), 16), '.', p_kind, '.', p_id)"""

_JOB_STATUS = """CREATE OR REPLACE FUNCTION gman_job_status(`handle` TEXT CHARACTER SET utf8mb4)
    RETURNS TEXT CHARACTER SET utf8mb4
    {head}
BEGIN
    DECLARE v_id BIGINT UNSIGNED;
    DECLARE v_detail TEXT CHARACTER SET utf8mb4 DEFAULT NULL;
    DECLARE v_message VARCHAR(512) CHARACTER SET utf8mb4;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_detail = NULL;
    IF `handle` IS NULL OR NOT `handle` REGEXP '^outbox:[0-9]{{1,19}}$' THEN
        SET v_message = CONCAT('gman_job_status: ',
            QUOTE(LEFT(`handle`, 100)),
            ' is not an outbox:<id> handle (MariaDB asks no job server; ask the job server ',
            'itself, e.g. gearsql status)');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    SET v_id = CAST(SUBSTRING(`handle`, 8) AS UNSIGNED);
    SELECT CONCAT('in the outbox since ', created_at) INTO v_detail
        FROM gman_outbox WHERE id = v_id;
    IF v_detail IS NOT NULL THEN
        RETURN JSON_OBJECT('known', JSON_EXTRACT('true', '$'),
            'running', JSON_EXTRACT('false', '$'), 'numerator', NULL, 'denominator', NULL,
            'state', 'pending', 'detail', v_detail);
    END IF;
    SELECT CONCAT(reason, ' (moved to gman_outbox_dead at ', dead_at, ')') INTO v_detail
        FROM gman_outbox_dead WHERE id = v_id;
    RETURN JSON_OBJECT('known', JSON_EXTRACT('false', '$'),
        'running', JSON_EXTRACT('false', '$'), 'numerator', NULL, 'denominator', NULL,
        'state', IF(v_detail IS NULL, 'submitted', 'dead'),
        'detail', COALESCE(v_detail, CONCAT('no longer in the outbox: the relay submitted it ',
                                            '(or the transaction that wrote it never committed)')));
END"""

_PIPELINE = """CREATE OR REPLACE SQL SECURITY DEFINER VIEW gman_pipeline AS SELECT
    (SELECT COUNT(*) FROM gman_outbox) AS backlog,
    (SELECT TIMESTAMPDIFF(MICROSECOND, MIN(created_at), NOW(6)) / 1000000 FROM gman_outbox)
        AS oldest_age_seconds,
    (SELECT COUNT(*) FROM gman_outbox_dead) AS dead,
    (SELECT MAX(dead_at) FROM gman_outbox_dead) AS last_dead_at,
    (SELECT GROUP_CONCAT(CONCAT(id, ': ', reason) ORDER BY dead_at DESC, id DESC
                         SEPARATOR '\n' LIMIT 5) FROM gman_outbox_dead) AS last_dead_reasons"""

_OUTBOX_INSERT = """CREATE OR REPLACE FUNCTION _gman_outbox_insert(
    p_caller VARCHAR(64) CHARACTER SET ascii, p_function LONGBLOB, p_workload LONGBLOB,
    p_unique LONGBLOB, p_priority VARCHAR(6) CHARACTER SET ascii)
    RETURNS VARCHAR(32) CHARACTER SET ascii
    {head}
BEGIN
    CALL _gman_check(p_caller, p_function, p_workload, p_unique);
    INSERT INTO gman_outbox (function, unique_key, workload, priority)
        VALUES (p_function, NULLIF(p_unique, ''), p_workload, p_priority);
    RETURN CONCAT('outbox:', LAST_INSERT_ID());
END"""

_CALL = """CREATE OR REPLACE FUNCTION _gman_call(
    p_caller VARCHAR(64) CHARACTER SET ascii, p_function LONGBLOB, p_workload LONGBLOB,
    p_unique LONGBLOB, p_priority VARCHAR(6) CHARACTER SET ascii)
    RETURNS LONGBLOB
    {head}
BEGIN
    DECLARE v_id BIGINT UNSIGNED;
    DECLARE v_timeout DOUBLE;
    DECLARE v_poll DOUBLE;
    DECLARE v_deadline DOUBLE;
    DECLARE v_done VARCHAR(64) CHARACTER SET ascii;
    DECLARE v_status VARCHAR(16) CHARACTER SET ascii DEFAULT NULL;
    DECLARE v_result LONGBLOB DEFAULT NULL;
    DECLARE v_text VARCHAR(400) CHARACTER SET utf8mb4 DEFAULT NULL;
    DECLARE v_message VARCHAR(512) CHARACTER SET utf8mb4;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_status = NULL;
    CALL _gman_check(p_caller, p_function, p_workload, p_unique);
    IF @@in_transaction OR NOT @@autocommit THEN
        SET v_message = CONCAT(p_caller, ': cannot run inside a transaction (BEGIN, or ',
            'autocommit off): the job would run even if it rolled back; call it with ',
            'autocommit on, or use ', p_caller, '_background');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    SET v_timeout = _gman_setting('timeout');
    SET v_poll = _gman_setting('poll_interval');
    -- Never committed: the relay reads it uncommitted, and the statement's end (success,
    -- error or kill) takes it away.
    INSERT INTO gman_calls (function, unique_key, workload, priority, timeout, connection_id)
        VALUES (p_function, NULLIF(p_unique, ''), p_workload, p_priority, v_timeout,
                CONNECTION_ID());
    SET v_id = LAST_INSERT_ID();
    -- The row is whole only now: a relay reading uncommitted rows could see a long workload
    -- half written before, so it takes only calls whose 'ready' lock is held.
    DO GET_LOCK(_gman_lock_name('ready', v_id), 0);
    SET v_done = _gman_lock_name('done', v_id);
    SET v_deadline = UNIX_TIMESTAMP(SYSDATE(6)) + v_timeout;
    wait_for_result: LOOP
        IF IS_USED_LOCK(v_done) IS NOT NULL THEN
            -- A locking read sees the relay's committed row whatever this statement's snapshot.
            SELECT status, result, message INTO v_status, v_result, v_text
                FROM gman_results WHERE call_id = v_id FOR UPDATE;
            IF v_status IS NOT NULL THEN
                LEAVE wait_for_result;
            END IF;
        END IF;
        IF UNIX_TIMESTAMP(SYSDATE(6)) >= v_deadline THEN
            LEAVE wait_for_result;
        END IF;
        DO SLEEP(LEAST(v_poll, GREATEST(0, v_deadline - UNIX_TIMESTAMP(SYSDATE(6)))));
    END LOOP;
    DO RELEASE_LOCK(_gman_lock_name('ready', v_id));
    DELETE FROM gman_calls WHERE id = v_id;
    IF v_status IS NULL THEN
        IF IS_USED_LOCK(_gman_lock_name('claim', v_id)) IS NULL THEN
            SET v_message = CONCAT(p_caller, ': no relay took the call within ', v_timeout,
                ' s (run gearsql relay --dsn mysql://... for database ', DATABASE(), ')');
        ELSE
            SET v_message = CONCAT(p_caller, ': no result within ', v_timeout,
                ' s (is a worker registered for the function?)');
        END IF;
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    DELETE FROM gman_results WHERE call_id = v_id;
    IF v_status = 'complete' THEN
        RETURN IF(LENGTH(v_result) > 0, v_result, NULL);
    ELSEIF v_status = 'fail' THEN
        SET v_message = CONCAT(p_caller, ': the worker failed the job (WORK_FAIL)');
    ELSEIF v_status = 'exception' THEN
        SET v_message = CONCAT(p_caller, ': the worker raised an exception: ',
                               COALESCE(v_text, ''));
    ELSE
        SET v_message = CONCAT(p_caller, ': ', COALESCE(v_text, 'the relay failed'));
    END IF;
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
END"""


def _comment(text: str) -> str:
    return _literal(text)


def _head(access: str, comment: str) -> str:
    return _ROUTINE_HEAD.format(access=access, comment=_comment(comment))


def _public_function(name: str) -> str:
    params, returns = FUNCTIONS[name]
    background = "_background" in name
    priority = next(
        (level for infix, level in _PRIORITIES.items() if infix and infix in name),
        Priority.NORMAL,
    ).word
    unique = "`unique`" if "unique" in params else "NULL"
    args = ", ".join(f"`{param}` LONGBLOB" for param in params)
    target = "_gman_outbox_insert" if background else "_gman_call"
    if background:
        what = (
            "write a background job to gman_outbox in the caller's transaction; the relay "
            "submits it after commit; returns 'outbox:<id>'"
        )
    else:
        what = (
            "run a job through the relay and return its result (NULL if empty); not inside "
            "a transaction"
        )
    priority_text = "" if priority == "normal" else f" ({priority} priority)"
    return (
        f"CREATE OR REPLACE FUNCTION {name}({args})\n"
        f"    RETURNS {returns}\n"
        f"    {_head('MODIFIES SQL DATA', f'gearsql: {what}{priority_text}')}\n"
        f"RETURN {target}('{name}', `function`, `workload`, {unique}, '{priority}')"
    )


def _routines() -> list[str]:
    """Every CREATE OR REPLACE of a routine, callees first."""
    return [
        _SETTING.format(head=_head("READS SQL DATA", "gearsql: one setting of gman_settings")),
        _CHECK.format(head=_head("READS SQL DATA", "gearsql: checks a gman_* call's arguments")),
        _SERVER.format(),
        _SERVERS.format(),
        _LOCK_NAME,
        _OUTBOX_INSERT.format(head=_head("MODIFIES SQL DATA", "gearsql: one gman_outbox row")),
        _CALL.format(head=_head("MODIFIES SQL DATA", "gearsql: one foreground call")),
        *(
            _public_function(name)
            for name in FUNCTIONS
            if name not in ("gman_servers_set", "gman_job_status")
        ),
        _JOB_STATUS.format(
            head=_head(
                "READS SQL DATA",
                "gearsql: pending, dead (with the reason) or submitted, of an outbox:<id> handle, "
                "as JSON",
            )
        ),
        _SERVERS_SET.format(
            head=_head(
                "READS SQL DATA",
                "gearsql: checks a job server list against the allowed ones and returns it; "
                "the relay decides where jobs go",
            )
        ),
    ]


def install_statements(
    servers: str | None = None,
    grant_to: Sequence[str] = (),
    timeout: str | None = None,
    relay_account: str | None = None,
) -> list[str]:
    """The statements that install (or upgrade) everything into the current database.

    Settings already there are kept, except those given. Every ``grant_to`` account (see
    :func:`check_account`) gets EXECUTE on the public functions and nothing on the tables;
    ``relay_account`` gets :data:`RELAY_PRIVILEGES` on the tables. Raises ValueError for a bad
    account, server list or timeout.
    """
    accounts = [check_account(account) for account in grant_to]
    relay = None if relay_account is None else check_account(relay_account)
    chosen = {
        "servers": servers if servers is None else _check_servers(servers),
        "timeout": timeout if timeout is None else _check_number("timeout", timeout),
    }
    statements = [
        "SET NAMES utf8mb4",
        f"SET SESSION sql_mode = '{_SQL_MODE}'",
        *(_TABLE_SQL[table] for table in TABLES),
        "INSERT IGNORE INTO gman_settings (name, value) VALUES\n"
        + ",\n".join(
            f"    ({_literal(name)}, {_literal(default)})"
            for name, (default, _) in SETTINGS.items()
        ),
    ]
    for name, value in chosen.items():
        if value is not None:
            statements.append(
                f"UPDATE gman_settings SET value = {_literal(value)} WHERE name = {_literal(name)}"
            )
    statements += _routines()
    statements.append(_PIPELINE)
    for account in accounts:
        for name in FUNCTIONS:
            statements.append(f"GRANT EXECUTE ON FUNCTION {name} TO {account}")
        for view in VIEWS:
            statements.append(f"GRANT SELECT ON TABLE {view} TO {account}")
    if relay is not None:
        for table, privileges in RELAY_PRIVILEGES.items():
            statements.append(f"GRANT {privileges} ON TABLE {table} TO {relay}")
        for view in VIEWS:
            statements.append(f"GRANT SELECT ON TABLE {view} TO {relay}")
    return statements


def uninstall_statements(force: bool = False) -> list[str]:
    """The statements that remove everything :func:`install_statements` created. Unless
    ``force``, they first refuse (SQL error, nothing changed) while ``gman_outbox`` holds rows
    the relay has not submitted."""
    statements = []
    if not force:
        statements.append(
            "BEGIN NOT ATOMIC\n"
            "    IF EXISTS (SELECT 1 FROM information_schema.TABLES\n"
            "               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'gman_outbox') THEN\n"
            "        IF EXISTS (SELECT 1 FROM gman_outbox) THEN\n"
            "            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT =\n"
            "                'gearsql: gman_outbox still holds jobs not yet relayed (let the "
            "relay drain it, or uninstall with --force)';\n"
            "        END IF;\n"
            "    END IF;\n"
            "END"
        )
    for view in VIEWS:
        statements.append(f"DROP VIEW IF EXISTS {view}")
    for name in reversed(list(FUNCTIONS)):
        statements.append(f"DROP FUNCTION IF EXISTS {name}")
    for kind, name in reversed(_INTERNAL):
        statements.append(f"DROP {kind} IF EXISTS {name}")
    for table in reversed(TABLES):
        statements.append(f"DROP TABLE IF EXISTS {table}")
    return statements


def _script(statements: list[str]) -> str:
    """Statements as a script for the mysql client: routines between DELIMITER lines."""
    parts = []
    for statement in statements:
        if statement.startswith(("CREATE OR REPLACE", "BEGIN NOT ATOMIC")):
            if _DELIMITER in statement:
                raise RuntimeError(f"a routine contains the delimiter {_DELIMITER}")
            parts.append(f"DELIMITER {_DELIMITER}\n{statement}{_DELIMITER}\nDELIMITER ;")
        else:
            parts.append(statement + ";")
    return "\n\n".join(parts) + "\n"


def _install_header() -> str:
    lines = [
        "-- gearsql: the gman_* Gearman functions for MariaDB (stored functions, an outbox and",
        "-- the relay sidecar). Generated by sql/generate.py from gearsql/bridges/mysql.py; do",
        "-- not edit by hand. Needs MariaDB 10.3 or later.",
        "--",
        "-- Installs into the current database, as an account that may create routines:",
        "--     mysql --database=app < sql/mysql/install.sql",
        "-- or, with accounts to grant EXECUTE to and the allowed job servers:",
        "--     gearsql install mysql --dsn mysql://root@127.0.0.1:3306/app \\",
        "--         --grant-to \"'app'@'%'\" --servers 10.0.0.5:4730",
        "-- Then run the relay, which submits the outbox and serves foreground calls:",
        "--     gearsql relay --dsn mysql://relay:pw@127.0.0.1:3306/app --servers 10.0.0.5:4730",
        "--",
        "-- Callers need only EXECUTE on the functions (they run as the installing account):",
        "--     GRANT EXECUTE ON FUNCTION app.gman_do_background TO 'app'@'%';",
        "-- The relay's account needs, on the tables (gearsql install mysql --relay-account):",
        *(
            f"--     GRANT {privileges} ON TABLE app.{table} TO 'relay'@'%';"
            for table, privileges in RELAY_PRIVILEGES.items()
        ),
        "-- With the binary log on, MariaDB also wants log_bin_trust_function_creators = 1 to",
        "-- create these functions (they write tables and are not deterministic).",
        "--",
        "-- Functions (MariaDB has no overloading, so the optional unique is a name of its own):",
    ]
    for name, (params, returns) in FUNCTIONS.items():
        lines.append(f"--   {name}({', '.join(params)}) -> {returns.split()[0]}")
    lines += [
        "--",
        "-- Outbox rows no job server will take (too large, say) are moved by the relay into",
        "-- gman_outbox_dead with the reason. The view gman_pipeline (SELECT for --grant-to",
        "-- accounts) shows the backlog (rows, the oldest one's age) and the dead letters",
        "-- (how many, the newest reasons); gman_job_status('outbox:<id>') says whether a",
        "-- row is pending, dead or submitted.",
        "--",
        "-- Settings (gman_settings; only the installing account changes them, e.g.",
        "--     UPDATE gman_settings SET value = '10.0.0.5:4730' WHERE name = 'servers';",
        "-- ):",
    ]
    for name, (default, meaning) in SETTINGS.items():
        lines.append(f"--   {name} (default {default}): {meaning}")
    return "\n".join(lines) + "\n\n"


def install_sql(
    servers: str | None = None,
    grant_to: Sequence[str] = (),
    timeout: str | None = None,
    relay_account: str | None = None,
    for_file: bool = False,
) -> str:
    """:func:`install_statements` as a script for the ``mysql`` client."""
    text = _script(install_statements(servers, grant_to, timeout, relay_account))
    return _install_header() + text if for_file else text


def uninstall_sql(force: bool = False, for_file: bool = False) -> str:
    """:func:`uninstall_statements` as a script for the ``mysql`` client."""
    text = _script(uninstall_statements(force))
    if for_file:
        text = (
            "-- gearsql: remove the gman_* functions, settings, outbox and call tables from the\n"
            "-- current database. Generated by sql/generate.py; do not edit by hand. Refuses\n"
            "-- while gman_outbox holds jobs the relay has not submitted (gearsql uninstall\n"
            "-- mysql --force drops them).\n\n" + text
        )
    return text


# ----------------------------------------------------------------------------- running it


#: What an install or uninstall needs, said when MariaDB refuses it for lack of privilege.
_PRIVILEGES_NEEDED = {
    "install": "installing needs the database's owner (ALL PRIVILEGES on it) or root: at least "
    "CREATE, INSERT, CREATE ROUTINE and ALTER ROUTINE on the database",
    "uninstall": "removing needs the database's owner (ALL PRIVILEGES on it) or root: at least "
    "SELECT, DROP and ALTER ROUTINE on the database",
    "grant": "--grant-to and --relay-account also need the GRANT OPTION on the database "
    "(GRANT ALL ON db.* TO ... WITH GRANT OPTION), or root",
}

#: ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR,
#: ER_PROCACCESS_DENIED_ERROR.
_ACCESS_DENIED = frozenset({1044, 1142, 1227, 1370})


def _run(dsn: str, statements: list[str], action: str) -> None:
    try:
        import mysql.connector
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "mysql-connector-python is needed: pip install 'gearsql[mysql]'"
        ) from exc
    try:
        conn: Any = mysql.connector.connect(**connect_config(dsn))
    except mysql.connector.Error as exc:
        if exc.errno in _ACCESS_DENIED:  # no privilege at all on the database
            raise PermissionError(f"{exc.msg}: {_PRIVILEGES_NEEDED[action]}") from exc
        raise
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT VERSION()")
        version = str(cursor.fetchone()[0])
        if "mariadb" not in version.lower():
            raise RuntimeError(
                f"the gman_* functions need MariaDB 10.3 or later; this server is {version}"
            )
        for statement in statements:
            try:
                cursor.execute(statement)
            except mysql.connector.Error as exc:
                if exc.errno == 1418:  # ER_BINLOG_UNSAFE_ROUTINE
                    raise RuntimeError(
                        "the binary log is on: MariaDB creates these functions only with "
                        "log_bin_trust_function_creators = 1 (SET GLOBAL, or in my.cnf)"
                    ) from exc
                if exc.errno in _ACCESS_DENIED:
                    granting = statement.startswith("GRANT")
                    needed = _PRIVILEGES_NEEDED["grant" if granting else action]
                    raise PermissionError(f"{exc.msg}: {needed}") from exc
                raise
    finally:
        conn.close()


def install(
    dsn: str,
    servers: str | None = None,
    grant_to: Sequence[str] = (),
    timeout: str | None = None,
    relay_account: str | None = None,
) -> None:
    """Install or upgrade everything into the database of ``dsn`` (see
    :func:`install_statements`). Raises ValueError for bad arguments, RuntimeError for a server
    that is not MariaDB, PermissionError (saying which privileges) when the account lacks one,
    and ``mysql.connector.Error`` when the database refuses for another reason."""
    _run(dsn, install_statements(servers, grant_to, timeout, relay_account), "install")


def uninstall(dsn: str, force: bool = False) -> None:
    """Remove everything from the database of ``dsn`` (see :func:`uninstall_statements`).
    Raises as :func:`install` does."""
    _run(dsn, uninstall_statements(force), "uninstall")
