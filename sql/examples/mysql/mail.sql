-- Outgoing mail queue (MySQL/MariaDB): an INSERT into outgoing_mail queues the message; a
-- worker sends it over SMTP after the inserting transaction has committed.
--
-- Needs the gman_* stored functions in this database (`gearsql install mysql --dsn ...`) and a
-- relay (`gearsql relay --dsn ...`). The job's workload is the row as a JSON object
-- {"id", "sender", "recipient", "subject", "body"}; the worker is examples/mail_worker.py.
-- AFTER INSERT, because only then does NEW.id hold the AUTO_INCREMENT value.
--
--     mariadb app < sql/examples/mysql/mail.sql
--     mariadb app -e "INSERT INTO outgoing_mail (recipient, subject, body) VALUES ('bob@example.com', 'Hi', 'See you')"

CREATE TABLE IF NOT EXISTS outgoing_mail (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    sender VARCHAR(255) NOT NULL DEFAULT 'gearsql@localhost',
    recipient VARCHAR(255) NOT NULL,
    subject VARCHAR(998) NOT NULL DEFAULT '',
    body MEDIUMTEXT NOT NULL,
    queued_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

DROP TRIGGER IF EXISTS queue_outgoing_mail;
CREATE TRIGGER queue_outgoing_mail AFTER INSERT ON outgoing_mail FOR EACH ROW
    SET @ret = gman_do_background('send_mail', JSON_OBJECT(
        'id', NEW.id, 'sender', NEW.sender, 'recipient', NEW.recipient,
        'subject', NEW.subject, 'body', NEW.body));
