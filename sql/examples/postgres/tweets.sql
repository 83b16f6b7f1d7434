-- Blog to tweet (PostgreSQL): every committed blog entry becomes a 'send_tweet' job.
--
-- Needs the gman_* functions (`gearsql install postgres --dsn ...`, schema gearsql) and a relay
-- (`gearsql relay --dsn ...`): in the default transactional mode gman_do_background writes an
-- outbox row in the inserting transaction, and the relay submits it once that transaction has
-- committed. A rolled-back insert never tweets. The worker is examples/tweet_worker.py.
--
--     psql -v ON_ERROR_STOP=1 -d app -f sql/examples/postgres/tweets.sql
--     psql -d app -c "INSERT INTO blog_entries (title, url) VALUES ('Hello', 'https://example.org/hello')"
--
-- Installed into another schema (`--schema`)? Replace `gearsql.` below.

CREATE TABLE IF NOT EXISTS blog_entries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title text NOT NULL,
    url text NOT NULL,
    body text NOT NULL DEFAULT '',
    published_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION tweet_blog() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gearsql.gman_do_background('send_tweet', NEW.title || ' - ' || NEW.url);
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER tweet_blog AFTER INSERT ON blog_entries
    FOR EACH ROW EXECUTE FUNCTION tweet_blog();
