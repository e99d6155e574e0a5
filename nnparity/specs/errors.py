"""Errors raised while reading or validating a spec."""


class SpecError(ValueError):
    """An invalid spec; the message names the layer or field, the value and the fix."""
