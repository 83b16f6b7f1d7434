-- Outgoing mail queue (PostgreSQL): an INSERT into outgoing_mail queues the message; a worker
-- sends it over SMTP after the inserting transaction has committed.
--
-- Needs the gman_* functions (`gearsql install postgres --dsn ...`, schema gearsql) and a relay
-- (`gearsql relay --dsn ...`). The job's workload is the row as a JSON object
-- {"id", "sender", "recipient", "subject", "body"}; the worker is examples/mail_worker.py.
--
--     psql -v ON_ERROR_STOP=1 -d app -f sql/examples/postgres/mail.sql
--     psql -d app -c "INSERT INTO outgoing_mail (recipient, subject, body) VALUES ('bob@example.com', 'Hi', 'See you')"
--
-- Installed into another schema (`--schema`)? Replace `gearsql.` below.

CREATE TABLE IF NOT EXISTS outgoing_mail (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender text NOT NULL DEFAULT 'gearsql@localhost',
    recipient text NOT NULL,
    subject text NOT NULL DEFAULT '',
    body text NOT NULL DEFAULT '',
    queued_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION queue_outgoing_mail() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gearsql.gman_do_background('send_mail', json_build_object(
        'id', NEW.id, 'sender', NEW.sender, 'recipient', NEW.recipient,
        'subject', NEW.subject, 'body', NEW.body)::text);
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER queue_outgoing_mail AFTER INSERT ON outgoing_mail
    FOR EACH ROW EXECUTE FUNCTION queue_outgoing_mail();
