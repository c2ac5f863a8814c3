"""Store errors: everything the database or the image files can refuse."""


class StoreError(Exception):
    """The database or image store cannot do what was asked."""
