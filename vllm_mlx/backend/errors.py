"""Errors of model resolution, import and loading."""


class LoaderError(Exception):
    """A model could not be resolved, imported or loaded."""


class ModelNotFoundError(LoaderError):
    """The model spec names nothing we can find locally or download."""
