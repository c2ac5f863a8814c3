-- memetag schema v1. Applied once; never edited after release (add 0002_*.sql instead).

CREATE TABLE people (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

-- One person can be known under several ids: a Hangouts gaia_id, a Google Chat email, a Discord id.
CREATE TABLE person_aliases (
    source        TEXT NOT NULL,
    source_ref    TEXT NOT NULL,
    person_id     INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    display_name  TEXT,
    PRIMARY KEY (source, source_ref)
);
CREATE INDEX person_aliases_person ON person_aliases(person_id);

CREATE TABLE images (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    phash       TEXT,
    width       INTEGER NOT NULL CHECK (width > 0),
    height      INTEGER NOT NULL CHECK (height > 0),
    format      TEXT NOT NULL,
    ext         TEXT NOT NULL,
    bytes       INTEGER NOT NULL CHECK (bytes > 0),
    created_at  TEXT NOT NULL
);

CREATE TABLE posts (
    id                 INTEGER PRIMARY KEY,
    source             TEXT NOT NULL,
    source_id          TEXT NOT NULL,
    conversation_id    TEXT,
    conversation_name  TEXT,
    author_id          INTEGER REFERENCES people(id),
    posted_at          TEXT,
    url                TEXT,
    fallback_urls      TEXT,  -- JSON list of other URLs for the same image, best first
    local_ref          TEXT,
    media_hint         TEXT,
    must_sniff         INTEGER NOT NULL DEFAULT 0,
    image_id           INTEGER REFERENCES images(id),
    status             TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'stored', 'failed', 'not_image')),
    failure_reason     TEXT,
    failure_detail     TEXT,
    attempts           INTEGER NOT NULL DEFAULT 0,
    reaction_count     INTEGER,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (source, source_id)
);
CREATE INDEX posts_status ON posts(status);
CREATE INDEX posts_image ON posts(image_id);
CREATE INDEX posts_author_time ON posts(author_id, posted_at);
CREATE INDEX posts_posted_at ON posts(posted_at);

-- Labels the ingested post carried (folder/CSV); applied once its image is stored.
CREATE TABLE post_labels (
    post_id  INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    label    TEXT NOT NULL,
    PRIMARY KEY (post_id, label)
);

CREATE TABLE labels (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    emoji        TEXT,
    description  TEXT NOT NULL DEFAULT '',
    active       INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE label_votes (
    id          INTEGER PRIMARY KEY,
    image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    label_id    INTEGER NOT NULL REFERENCES labels(id) ON DELETE CASCADE,
    voter       TEXT NOT NULL,
    vote        INTEGER NOT NULL CHECK (vote IN (-1, 1)),
    origin      TEXT NOT NULL CHECK (origin IN ('ingest', 'reaction', 'command')),
    created_at  TEXT NOT NULL,
    UNIQUE (image_id, label_id, voter, origin)
);
CREATE INDEX label_votes_label ON label_votes(label_id);

CREATE TABLE models (
    id          INTEGER PRIMARY KEY,
    version     TEXT NOT NULL UNIQUE,
    path        TEXT NOT NULL,
    metrics     TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    is_current  INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX models_one_current ON models(is_current) WHERE is_current = 1;

CREATE TABLE predictions (
    id                  INTEGER PRIMARY KEY,
    image_id            INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    model_version       TEXT NOT NULL,
    probabilities       TEXT NOT NULL,
    sender_name         TEXT,
    sender_probability  REAL,
    created_at          TEXT NOT NULL,
    UNIQUE (image_id, model_version)
);
