-- memetag schema v4: what admins and members steer from Discord. Applied once; never edited.
--
-- One data dir is one community's model: images are content-addressed and shared, so a vote
-- labels the image for the one model this store trains, whichever guild it came from. Run one
-- data dir per community that should not share a model. What IS per guild: watched channels
-- and their modes, decision-threshold overrides, the audit log, backfill cursors, review posts.

-- A channel an admin disabled stays listed (so a config channel can be switched off).
ALTER TABLE bot_channels ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;

-- Every admin action: who, what, when, with which arguments, and how it ended.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    guild_id    TEXT,
    actor       TEXT NOT NULL,          -- "discord:<user id>" or "cli"
    action      TEXT NOT NULL,          -- e.g. "channel enable", "threshold", "retrain"
    arguments   TEXT NOT NULL DEFAULT '{}',  -- JSON object
    outcome     TEXT,                   -- "ok", "refused: ...", "failed: ..."
    created_at  TEXT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log(created_at);

-- Per-guild override of one label's decision threshold, applied at once by the tagger.
CREATE TABLE guild_thresholds (
    guild_id    TEXT NOT NULL,
    label       TEXT NOT NULL,
    threshold   REAL NOT NULL CHECK (threshold > 0 AND threshold < 1),
    updated_by  TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (guild_id, label)
);

-- Members who opted out: their future images are never downloaded, stored, predicted or shown.
CREATE TABLE optouts (
    author_source  TEXT NOT NULL,       -- "discord"
    author_ref     TEXT NOT NULL,       -- the Discord user id
    created_at     TEXT NOT NULL,
    PRIMARY KEY (author_source, author_ref)
);

-- Where a channel's history backfill got to: resumable after a crash or restart.
CREATE TABLE backfill_cursors (
    channel_id   TEXT PRIMARY KEY,
    guild_id     TEXT,
    after_id     TEXT,                  -- the newest message id fully stored so far
    stop_before  TEXT,                  -- the first live message id when the backfill began
    messages     INTEGER NOT NULL DEFAULT 0,
    images       INTEGER NOT NULL DEFAULT 0,
    votes        INTEGER NOT NULL DEFAULT 0,
    done         INTEGER NOT NULL DEFAULT 0,
    started_by   TEXT,
    updated_at   TEXT NOT NULL
);

-- Images posted for review: never the same image twice while it awaits answers.
CREATE TABLE review_items (
    id           INTEGER PRIMARY KEY,
    image_id     INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    guild_id     TEXT,
    channel_id   TEXT,
    message_id   TEXT UNIQUE,
    reason       TEXT NOT NULL CHECK (reason IN ('uncertain', 'random')),
    score        REAL,
    status       TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'closed')),
    created_at   TEXT NOT NULL,
    answered_at  TEXT
);
CREATE UNIQUE INDEX review_items_one_open ON review_items(image_id) WHERE status = 'open';

-- Retrains started from Discord; at most one runs at a time, across processes.
CREATE TABLE retrain_runs (
    id            INTEGER PRIMARY KEY,
    guild_id      TEXT,
    requested_by  TEXT NOT NULL,
    forced        INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL CHECK (status IN ('running', 'promoted', 'kept', 'failed')),
    version       TEXT,
    detail        TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE UNIQUE INDEX retrain_runs_one_running ON retrain_runs(status) WHERE status = 'running';
