"""Third-party backends through the ``nnparity.backends`` entry point, with the example plugin package.

The example package is built and installed with pip into a temporary
``--target`` folder, not into the shared environment. The CLI and its
worker processes find it through ``PYTHONPATH``, so nothing stays installed
after the module's tests.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from nnparity.backends import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_SOURCE = os.path.join(ROOT, "tests", "plugin_example")
BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """A folder holding the installed example plugin (package and dist-info with its entry points)."""
    work = tmp_path_factory.mktemp("plugin")
    # Building from a copy keeps build/ and *.egg-info out of the source tree.
    source = shutil.copytree(PLUGIN_SOURCE, work / "source",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return str(site)


@pytest.fixture
def plugin_env(plugin_site):
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [plugin_site, os.environ.get("PYTHONPATH")]))}


def nnparity(*args, env, timeout=600):
    return subprocess.run([os.path.join(BIN, "nnparity"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_entry_point_registers_backend(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(plugin_site)

    plugins = registry.plugin_backends()

    assert "example-numpy" in plugins
    info = plugins["example-numpy"]
    assert info.plugin == "nnparity_example_plugin:backend_info"
    assert info.adapter == "nnparity_example_plugin.adapter:ExampleNumpyAdapter"
    assert registry.get_backend("example-numpy").availability().available


def test_broken_plugin_does_not_hide_others(tmp_path, monkeypatch, caplog):
    dist_info = tmp_path / "broken_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[nnparity.backends]\nbroken = broken_plugin_missing:info\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with caplog.at_level(logging.WARNING, logger="nnparity"):
        backends = registry.all_backends()

    assert "broken" not in backends
    assert "numpy" in backends
    assert "backend plugin 'broken'" in caplog.text


def test_list_shows_plugin_backend(plugin_env):
    completed = nnparity("list", env=plugin_env)

    assert completed.returncode == 0, completed.stderr
    assert "example-numpy" in completed.stdout


def test_run_trains_plugin_like_reference(plugin_env, tmp_path):
    completed = nnparity("run", "--models", "moons-mlp", "--backends", "numpy,example-numpy", "--max-steps", "30",
                         "--dtype", "float64", "--out", str(tmp_path), env=plugin_env)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    with open(tmp_path / "runs.jsonl") as handle:
        records = {r["backend"]: r for r in map(json.loads, handle)}
    assert records["example-numpy"]["status"] == "ok"
    assert records["example-numpy"]["backend_settings"]["plugin"] == "nnparity-example-plugin"
    assert records["example-numpy"]["loss_curve"] == records["numpy"]["loss_curve"]


def test_verify_accepts_plugin_backend(plugin_env, tmp_path):
    # NOTE: `nnparity verify` delegates to this module's run_verify_command.
    completed = subprocess.run(
        [sys.executable, "-m", "nnparity.harness.verify", "--models", "moons-mlp", "--backends", "example-numpy",
         "--steps", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, env=plugin_env, timeout=300,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = json.loads((tmp_path / "verify.json").read_text())
    assert document["backends"]["example-numpy"]["plugin"] == "nnparity_example_plugin:backend_info"
    rows = [r for r in document["rows"] if r["backend"] == "example-numpy"]
    assert rows and all(r["status"] == "pass" for r in rows)


def test_conformance_kit_passes_plugin(plugin_env):
    completed = subprocess.run([sys.executable, "-m", "nnparity.testing.conformance", "example-numpy"],
                               capture_output=True, text=True, env=plugin_env, timeout=300)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "failed" not in completed.stdout
    assert "unsupported:layer" in completed.stdout
