"""The stored functions and procedures of MariaDB's gman_* install (the SQL text
:mod:`gearsql.bridges.mysql` runs or writes to a file): the checks and settings helpers, the
job status, the outbox insert and the foreground call, and the public functions over them.
"""

from __future__ import annotations

from gearsql.protocol import Priority

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
# gman_servers_set(servers, function) of the old UDF; MariaDB has no overloading.
FUNCTIONS["gman_servers_set_function"] = (("servers", "function"), "TEXT CHARACTER SET utf8mb4")
FUNCTIONS["gman_job_status"] = (("handle",), "TEXT CHARACTER SET utf8mb4")


def literal(value: str) -> str:
    if "\\" in value:
        raise ValueError(f"{value!r}: backslashes are not allowed in settings")
    return "'" + value.replace("'", "''") + "'"


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
        SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = v_message;
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
        SIGNAL SQLSTATE 'GM006' SET MESSAGE_TEXT = v_message;
    END IF;
    IF p_name <> 'servers' AND NOT v_value REGEXP '^[0-9]+([.][0-9]+)?$' THEN
        SET v_message = CONCAT('gearsql: bad setting ', p_name, '=', v_value,
                               ' in gman_settings (a number)');
        SIGNAL SQLSTATE 'GM006' SET MESSAGE_TEXT = v_message;
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
    items: WHILE v_index <= v_count DO
        SET v_item = TRIM(SUBSTRING_INDEX(SUBSTRING_INDEX(p_list, ',', v_index), ',', -1));
        IF v_item <> '' THEN
            SET v_server = _gman_server(v_item);
            IF v_server IS NULL THEN
                SET v_message = CONCAT(p_caller, ': bad job server address ''',
                                       LEFT(v_item, 200), '''');
                LEAVE items;
            END IF;
            IF FIND_IN_SET(v_server, v_out) = 0 THEN
                SET v_out = IF(v_out = '', v_server, CONCAT(v_out, ',', v_server));
            END IF;
        END IF;
        SET v_index = v_index + 1;
    END WHILE;
    IF v_message IS NULL AND v_out = '' THEN
        SET v_message = CONCAT(p_caller, ': the job server list is empty');
    END IF;
    -- The servers setting (p_caller 'gearsql: bad setting ...') is an administrator's to fix;
    -- a list given to a function is a bad argument.
    IF v_message IS NOT NULL AND LEFT(p_caller, 8) = 'gearsql:' THEN
        SIGNAL SQLSTATE 'GM006' SET MESSAGE_TEXT = v_message;
    ELSEIF v_message IS NOT NULL THEN
        SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = v_message;
    END IF;
    RETURN v_out;
END"""

# The list normalised, every server of it among the allowed ones ('servers' setting), else an
# error: 42501 (insufficient_privilege) for a server not allowed, as in PostgreSQL.
_SERVERS_ALLOWED = """CREATE OR REPLACE FUNCTION _gman_servers_allowed(
    p_caller VARCHAR(64) CHARACTER SET ascii, p_servers TEXT CHARACTER SET utf8mb4)
    RETURNS TEXT CHARACTER SET utf8mb4
    {head}
BEGIN
    DECLARE v_allowed TEXT CHARACTER SET utf8mb4;
    DECLARE v_wanted TEXT CHARACTER SET utf8mb4;
    DECLARE v_count INT;
    DECLARE v_index INT DEFAULT 1;
    DECLARE v_server VARCHAR(1024) CHARACTER SET utf8mb4;
    DECLARE v_message VARCHAR(512) CHARACTER SET utf8mb4;
    SET v_allowed = _gman_servers('gearsql: bad setting servers in gman_settings',
                                  _gman_setting('servers'));
    SET v_wanted = _gman_servers(p_caller, p_servers);
    SET v_count = LENGTH(v_wanted) - LENGTH(REPLACE(v_wanted, ',', '')) + 1;
    WHILE v_index <= v_count DO
        SET v_server = SUBSTRING_INDEX(SUBSTRING_INDEX(v_wanted, ',', v_index), ',', -1);
        IF FIND_IN_SET(v_server, v_allowed) = 0 THEN
            SET v_message = CONCAT(p_caller, ': job server ', LEFT(v_server, 200),
                                   ' is not allowed (allowed: ', LEFT(v_allowed, 200),
                                   '; the installing account sets them in gman_settings)');
            SIGNAL SQLSTATE '42501' SET MESSAGE_TEXT = v_message;
        END IF;
        SET v_index = v_index + 1;
    END WHILE;
    RETURN v_wanted;
END"""

_SERVERS_SET = """CREATE OR REPLACE FUNCTION gman_servers_set(servers TEXT CHARACTER SET utf8mb4)
    RETURNS TEXT CHARACTER SET utf8mb4
    {head}
BEGIN
    IF servers IS NULL THEN
        SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = 'gman_servers_set: the server list is NULL';
    END IF;
    RETURN _gman_servers_allowed('gman_servers_set', servers);
END"""

# Jobs of `function` go to `servers` (the relay reads gman_function_servers); NULL servers
# removes the choice. Returns the normalised list (NULL after a removal).
_SERVERS_SET_FUNCTION = """CREATE OR REPLACE FUNCTION gman_servers_set_function(
    servers TEXT CHARACTER SET utf8mb4, `function` LONGBLOB)
    RETURNS TEXT CHARACTER SET utf8mb4
    {head}
BEGIN
    DECLARE v_wanted TEXT CHARACTER SET utf8mb4 DEFAULT NULL;
    CALL _gman_check('gman_servers_set_function', `function`, '', NULL);
    IF servers IS NULL THEN
        DELETE FROM gman_function_servers WHERE gman_function_servers.function = `function`;
        RETURN NULL;
    END IF;
    SET v_wanted = _gman_servers_allowed('gman_servers_set_function', servers);
    INSERT INTO gman_function_servers (function, servers) VALUES (`function`, v_wanted)
        ON DUPLICATE KEY UPDATE servers = v_wanted, set_at = CURRENT_TIMESTAMP(6);
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
        SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = v_message;
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
    IF v_detail IS NULL THEN
        SELECT CONCAT(s.handle, ' (submitted to ', s.server, ' by the relay at ', s.sent_at,
                      ')') INTO v_detail FROM gman_outbox_sent AS s WHERE s.id = v_id;
        IF v_detail IS NOT NULL THEN
            RETURN JSON_OBJECT('known', JSON_EXTRACT('false', '$'),
                'running', JSON_EXTRACT('false', '$'), 'numerator', NULL, 'denominator', NULL,
                'state', 'submitted', 'detail', v_detail);
        END IF;
    END IF;
    RETURN JSON_OBJECT('known', JSON_EXTRACT('false', '$'),
        'running', JSON_EXTRACT('false', '$'), 'numerator', NULL, 'denominator', NULL,
        'state', IF(v_detail IS NULL, 'submitted', 'dead'),
        'detail', COALESCE(v_detail, CONCAT('no longer in the outbox: the relay submitted it ',
                                            '(or the transaction that wrote it never committed)')));
END"""

PIPELINE = """CREATE OR REPLACE SQL SECURITY DEFINER VIEW gman_pipeline AS SELECT
    (SELECT COUNT(*) FROM gman_outbox) AS backlog,
    (SELECT TIMESTAMPDIFF(MICROSECOND, MIN(created_at), NOW(6)) / 1000000 FROM gman_outbox)
        AS oldest_age_seconds,
    (SELECT COUNT(*) FROM gman_outbox_dead) AS dead,
    (SELECT MAX(dead_at) FROM gman_outbox_dead) AS last_dead_at,
    (SELECT GROUP_CONCAT(CONCAT(id, ': ', reason) ORDER BY dead_at DESC, id DESC
                         SEPARATOR '\n' LIMIT 5) FROM gman_outbox_dead) AS last_dead_reasons,
    (SELECT MAX(last_contact) FROM gman_relay_contact) AS last_relay_contact"""

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
        SIGNAL SQLSTATE '25001' SET MESSAGE_TEXT = v_message;
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
            SIGNAL SQLSTATE 'GM001' SET MESSAGE_TEXT = v_message;
        END IF;
        SET v_message = CONCAT(p_caller, ': no result within ', v_timeout,
            ' s (is a worker registered for the function?)');
        SIGNAL SQLSTATE 'GM002' SET MESSAGE_TEXT = v_message;
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
    -- The kind of failure the relay recorded (gearsql.bridges.mysql_calls) picks the SQLSTATE
    -- (docs/design.md, "Errors and their SQLSTATEs").
    CASE v_status
        WHEN 'unreachable' THEN SIGNAL SQLSTATE 'GM001' SET MESSAGE_TEXT = v_message;
        WHEN 'timeout' THEN SIGNAL SQLSTATE 'GM002' SET MESSAGE_TEXT = v_message;
        WHEN 'fail' THEN SIGNAL SQLSTATE 'GM003' SET MESSAGE_TEXT = v_message;
        WHEN 'exception' THEN SIGNAL SQLSTATE 'GM004' SET MESSAGE_TEXT = v_message;
        WHEN 'refused' THEN SIGNAL SQLSTATE 'GM005' SET MESSAGE_TEXT = v_message;
        ELSE SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END CASE;
END"""


def _comment(text: str) -> str:
    return literal(text)


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


def routines() -> list[str]:
    """Every CREATE OR REPLACE of a routine, callees first."""
    return [
        _SETTING.format(head=_head("READS SQL DATA", "gearsql: one setting of gman_settings")),
        _CHECK.format(head=_head("READS SQL DATA", "gearsql: checks a gman_* call's arguments")),
        _SERVER.format(),
        _SERVERS.format(),
        _LOCK_NAME,
        _OUTBOX_INSERT.format(head=_head("MODIFIES SQL DATA", "gearsql: one gman_outbox row")),
        _CALL.format(head=_head("MODIFIES SQL DATA", "gearsql: one foreground call")),
        _SERVERS_ALLOWED.format(
            head=_head(
                "READS SQL DATA", "gearsql: a job server list, checked against the allowed ones"
            )
        ),
        *(
            _public_function(name)
            for name in FUNCTIONS
            if name not in ("gman_servers_set", "gman_servers_set_function", "gman_job_status")
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
        _SERVERS_SET_FUNCTION.format(
            head=_head(
                "MODIFIES SQL DATA",
                "gearsql: jobs of the function go to these servers (NULL: the default again); "
                "returns the list",
            )
        ),
    ]
