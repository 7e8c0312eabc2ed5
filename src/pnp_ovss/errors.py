"""Exceptions with messages meant for users: they name the file and say what was expected."""


class PnpOvssError(Exception):
    """Base class of errors reported to the user without a traceback by the CLI."""


class DatasetError(PnpOvssError):
    """A dataset folder, split file, image or annotation is missing or malformed."""


class ConfigError(PnpOvssError):
    """The configuration is invalid."""


class LabelError(PnpOvssError):
    """A label answer cannot be parsed or a label source is unusable."""


class ModelError(PnpOvssError):
    """The model cannot be loaded."""
