"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (config, dataset, architecture, checkpoint).

    Raised before any work starts where possible; never for programming errors.
    """

    exit_code = 2


class ConfigError(UserError):
    """A config key is unknown, of the wrong type, or holds an impossible value."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"config error: {key}: {message}")


class ArchError(UserError):
    """An architecture does not belong to its search space."""


class DatasetError(UserError):
    """A dataset is missing, unreadable or malformed."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or from an incompatible run."""
