-- Blog to tweet (SQLite): every committed blog entry becomes a 'send_tweet' job.
--
-- SQLite runs the gman_* functions inside the application's process, so the connection that
-- inserts must have them (`gearsql.sqlite.connect(path, servers=...)` or `register(conn, ...)`;
-- the sqlite-utils CLI has them too). In the default transactional mode gman_do_background
-- writes a gman_outbox row in the inserting transaction, and `gearsql relay --dsn
-- sqlite:///PATH` submits it once committed. A rolled-back insert never tweets. The worker is
-- examples/tweet_worker.py.
--
--     conn = gearsql.sqlite.connect("app.db", servers="127.0.0.1:4730")
--     conn.executescript(open("sql/examples/sqlite/tweets.sql").read())
--     with conn:
--         conn.execute("INSERT INTO blog_entries (title, url) VALUES (?, ?)", ("Hello", url))

CREATE TABLE IF NOT EXISTS blog_entries (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '',
    published_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TRIGGER IF NOT EXISTS tweet_blog AFTER INSERT ON blog_entries
BEGIN
    SELECT gman_do_background('send_tweet', NEW.title || ' - ' || NEW.url);
END;
