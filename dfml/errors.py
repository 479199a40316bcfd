"""Errors that separate a user's bad input from a bug.

The CLI turns every :class:`UserError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a config value, a flag, a path, a topology."""


class ConfigError(UserError):
    """A configuration value is outside what is allowed."""


class DataNotFoundError(UserError):
    """Dataset files are missing from the data root."""


class TrainingDivergedError(UserError):
    """A client's loss became NaN/inf; the run stops and keeps what it wrote."""

    def __init__(self, client_id: int, round_index: int, loss: float) -> None:
        super().__init__(
            f"client {client_id} diverged in round {round_index} (loss={loss}); "
            "lower --lr or check the data"
        )
        self.client_id = client_id
        self.round_index = round_index
        self.loss = loss

    def __reduce__(self) -> tuple[type, tuple[int, int, float]]:
        # Rebuilt from its fields where it crosses processes (a Ray task, a Tune
        # trial): the default would call __init__ with the message alone.
        return type(self), (self.client_id, self.round_index, self.loss)


class Interruption(KeyboardInterrupt):
    """A run stopped from outside before its last round, for ``reason``: it ends as
    ``interrupted`` (not ``failed``) and keeps everything written so far."""

    reason = "interrupted"
