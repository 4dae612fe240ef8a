"""One root error type for the whole project.

Business rejections are *events* (see ``engine.events.CommandRejected``), never exceptions.
Exceptions are for bugs, broken invariants, bad configuration and infrastructure failures;
every one the project raises derives from :class:`ExchangeError`, and driver errors are
re-raised as one of these with ``from e``.
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(ExchangeError):
    """A configuration value is invalid (bad setting, inexact market spec, ...)."""


class InvariantError(ExchangeError):
    """An internal invariant broke: a bug. The service crashes, restarts and replays."""


class IllegalTransition(InvariantError):
    """A state machine was asked for a transition its table does not allow."""
