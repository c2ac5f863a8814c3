-- memetag schema v2. Applied once; never edited after release.

-- Image files a writer announced before writing them. An image file is garbage only when a
-- writer announced it here and never linked it to an image row: the orphan sweep deletes
-- nothing else, so files it cannot account for (a lost or replaced database) are never touched.
CREATE TABLE pending_files (
    sha256      TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    ext         TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
