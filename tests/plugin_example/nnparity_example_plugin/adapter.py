"""The example plugin's adapter: the NumPy reference under its own backend name.

A real plugin would compile the spec into its framework here. Reusing the
reference keeps the example small, and it still goes through every registry,
harness and verify path that a third-party backend does.
"""

from nnparity.backends.numpy.adapter import NumpyAdapter


class ExampleNumpyAdapter(NumpyAdapter):
    name = "example-numpy"

    def describe(self) -> dict:
        return {**super().describe(), "plugin": "nnparity-example-plugin"}
