"""Errors of the services layer; each is shown to a user as one line (a MemetagError)."""

from __future__ import annotations

from memetag.errors import MemetagError


class ServiceError(MemetagError):
    """Base for what a service refuses to do."""


class NoStore(ServiceError):
    """There is no store yet (nothing ingested)."""


class NoModel(ServiceError):
    """No model was trained yet, or none is current."""


class UnknownModel(ServiceError):
    """A model version that is not recorded (nor a file in the models folder)."""


class NotEnoughData(ServiceError):
    """Too few stored images, senders or labels to train."""


class BadRequest(ServiceError):
    """An option out of range (epochs < 1, an unknown label to explain...)."""
