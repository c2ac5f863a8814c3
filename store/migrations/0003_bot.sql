-- memetag schema v3: what the Discord bot keeps. Applied once; never edited after release.

-- A member has one current vote per label and image, whatever gesture made it (an emoji
-- reaction, the "Fix tags" control, a command): the latest gesture wins, so adding an emoji and
-- later deselecting the label in "Fix tags" is one -1, not +1 and -1. Ingested labels stay one
-- vote per source ('ingest:<source>'). Rebuilt because SQLite cannot change a CHECK or UNIQUE.
CREATE TABLE label_votes_v3 (
    id          INTEGER PRIMARY KEY,
    image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    label_id    INTEGER NOT NULL REFERENCES labels(id) ON DELETE CASCADE,
    voter       TEXT NOT NULL,
    vote        INTEGER NOT NULL CHECK (vote IN (-1, 1)),
    origin      TEXT NOT NULL CHECK (origin IN ('ingest', 'reaction', 'button', 'command')),
    created_at  TEXT NOT NULL,
    UNIQUE (image_id, label_id, voter)
);
-- Where v2 held one voter's votes from two origins, the later one is kept.
INSERT OR REPLACE INTO label_votes_v3 (image_id, label_id, voter, vote, origin, created_at)
    SELECT image_id, label_id, voter, vote, origin, created_at FROM label_votes ORDER BY id;
DROP TABLE label_votes;
ALTER TABLE label_votes_v3 RENAME TO label_votes;
CREATE INDEX label_votes_label ON label_votes(label_id);

-- Every gesture as it happened (append-only): vote +1/-1, or 0 when a member withdrew a vote
-- (removed their reaction). label_votes is the current state this log folds into.
CREATE TABLE vote_events (
    id          INTEGER PRIMARY KEY,
    image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    label       TEXT NOT NULL,
    voter       TEXT NOT NULL,
    vote        INTEGER NOT NULL CHECK (vote IN (-1, 0, 1)),
    origin      TEXT NOT NULL CHECK (origin IN ('reaction', 'button', 'command')),
    message_id  TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX vote_events_image ON vote_events(image_id);

-- Channels the bot watches and how it shows its tags there. Rows from [bot] channels in the
-- config are re-synced at start ('config'); admin commands add their own ('command').
CREATE TABLE bot_channels (
    channel_id  TEXT PRIMARY KEY,
    guild_id    TEXT,
    mode        TEXT NOT NULL CHECK (mode IN ('react', 'reply', 'silent')),
    origin      TEXT NOT NULL CHECK (origin IN ('config', 'command')),
    updated_by  TEXT,
    updated_at  TEXT NOT NULL
);

-- A Discord message the bot tagged: its images are the posts with source 'discord' and
-- source_id '<message_id>:<n>' (the numbering `ingest discord-export` uses), linked here; the
-- bot's reply to it, when it made one, is reply_id (reactions and Fix tags on the reply count
-- for the message's images).
CREATE TABLE bot_messages (
    message_id  TEXT PRIMARY KEY,
    channel_id  TEXT NOT NULL,
    guild_id    TEXT,
    author_ref  TEXT,
    reply_id    TEXT UNIQUE,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE bot_message_images (
    message_id  TEXT NOT NULL REFERENCES bot_messages(message_id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    post_id     INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    spoiler     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, position)
);
CREATE INDEX bot_message_images_post ON bot_message_images(post_id);

-- The bot's sender guess for each live post next to the two baselines as they stood when it
-- guessed (the most frequent poster so far; the most active in the last 30 days), scored later
-- against the author: the per-guild running accuracy.
CREATE TABLE live_guesses (
    post_id          INTEGER PRIMARY KEY REFERENCES posts(id) ON DELETE CASCADE,
    guild_id         TEXT,
    model_version    TEXT,
    author           TEXT,
    guess            TEXT,
    guess_probability REAL,
    majority_guess   TEXT,
    recent_guess     TEXT,
    created_at       TEXT NOT NULL
);
CREATE INDEX live_guesses_guild ON live_guesses(guild_id, created_at);
