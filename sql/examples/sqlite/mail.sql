-- Outgoing mail queue (SQLite): an INSERT into outgoing_mail queues the message; a worker sends
-- it over SMTP after the inserting transaction has committed.
--
-- The inserting connection needs the gman_* functions (`gearsql.sqlite.connect` or
-- `register`), and `gearsql relay --dsn sqlite:///PATH` submits the outbox rows. The job's
-- workload is the row as a JSON object {"id", "sender", "recipient", "subject", "body"}; the
-- worker is examples/mail_worker.py.
--
--     conn.executescript(open("sql/examples/sqlite/mail.sql").read())
--     with conn:
--         conn.execute("INSERT INTO outgoing_mail (recipient, subject, body) VALUES (?, ?, ?)",
--                      ("bob@example.com", "Hi", "See you"))

CREATE TABLE IF NOT EXISTS outgoing_mail (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL DEFAULT 'gearsql@localhost',
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL DEFAULT '',
    queued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TRIGGER IF NOT EXISTS queue_outgoing_mail AFTER INSERT ON outgoing_mail
BEGIN
    SELECT gman_do_background('send_mail', json_object(
        'id', NEW.id, 'sender', NEW.sender, 'recipient', NEW.recipient,
        'subject', NEW.subject, 'body', NEW.body));
END;
