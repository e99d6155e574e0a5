"""An example nnparity backend plugin: registration only, so that listing backends stays cheap.

nnparity calls ``backend_info()`` through the ``nnparity.backends`` entry
point. This module must not import the framework; the adapter module named
in ``BackendInfo.adapter`` is imported only inside worker processes.
"""

from nnparity.backends.registry import BackendInfo


def backend_info() -> BackendInfo:
    return BackendInfo(
        name="example-numpy",
        adapter="nnparity_example_plugin.adapter:ExampleNumpyAdapter",
        requires=("numpy",),
        summary="example plugin: the NumPy reference adapter registered from another package",
        install_hint="pip install -e tests/plugin_example",
    )
