-- Blog to tweet (MySQL/MariaDB): every committed blog entry becomes a 'send_tweet' job, with
-- the trigger written for the old gearman-mysql-udf, unchanged.
--
-- Needs the gman_* stored functions in this database (`gearsql install mysql --dsn ...`) and a
-- relay (`gearsql relay --dsn ...`): gman_do_background writes an outbox row in the inserting
-- transaction, and the relay submits it once that transaction has committed (it follows the
-- binlog when it is on in ROW format, else polls). A rolled-back insert never tweets. The
-- worker is examples/tweet_worker.py.
--
--     mariadb app < sql/examples/mysql/tweets.sql
--     mariadb app -e "INSERT INTO blog_entries (title, url) VALUES ('Hello', 'https://example.org/hello')"

CREATE TABLE IF NOT EXISTS blog_entries (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    title VARCHAR(255) NOT NULL,
    url VARCHAR(2048) NOT NULL,
    body TEXT NULL,
    published_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

DROP TRIGGER IF EXISTS tweet_blog;
CREATE TRIGGER tweet_blog BEFORE INSERT ON blog_entries FOR EACH ROW SET @ret=gman_do_background('send_tweet', CONCAT(NEW.title, " - ", NEW.url));
