-- Substring search over users by trigrams: an FTS5 index of users.search_text with the trigram
-- tokenizer. It is keyed by an integer of its own (user_search_keys.n), not by users' rowid,
-- which VACUUM (INTO, the online backup) may renumber in a table without an INTEGER PRIMARY KEY.
-- Triggers keep it in step with users.
CREATE TABLE user_search_keys (
    n INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE
);
CREATE VIRTUAL TABLE user_search USING fts5 (search_text, tokenize = 'trigram');

INSERT INTO user_search_keys (user_id) SELECT id FROM users;
INSERT INTO user_search (rowid, search_text)
    SELECT k.n, u.search_text FROM users u JOIN user_search_keys k ON k.user_id = u.id;

CREATE TRIGGER user_search_insert AFTER INSERT ON users BEGIN
    INSERT INTO user_search_keys (user_id) VALUES (new.id);
    INSERT INTO user_search (rowid, search_text)
        SELECT n, new.search_text FROM user_search_keys WHERE user_id = new.id;
END;

CREATE TRIGGER user_search_update AFTER UPDATE OF search_text ON users
WHEN old.search_text IS NOT new.search_text BEGIN
    UPDATE user_search SET search_text = new.search_text
        WHERE rowid = (SELECT n FROM user_search_keys WHERE user_id = new.id);
END;

CREATE TRIGGER user_search_delete AFTER DELETE ON users BEGIN
    DELETE FROM user_search WHERE rowid = (SELECT n FROM user_search_keys WHERE user_id = old.id);
    DELETE FROM user_search_keys WHERE user_id = old.id;
END;
