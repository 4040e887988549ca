"""User-facing errors: the CLI prints their message and exits with code 2, no traceback."""


class GeneralistError(Exception):
    """An error caused by the user's input (config, data, names); its message says what to do."""

    exit_code = 2  # what the CLI exits with (generalist.train.stops has its own codes)
    label = "error"


class UnknownNameError(GeneralistError, KeyError):
    """A name that is not registered. Subclasses KeyError so mapping-style callers still work."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(GeneralistError):
    """A name registered twice."""


class DataError(GeneralistError):
    """Bad input data: names the file, shard, row or key at fault."""


class ConfigError(GeneralistError):
    """Bad configuration: names the key at fault."""
