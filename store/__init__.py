"""SQLite store: schema, migrations, async queries, and the content-addressed image files."""
