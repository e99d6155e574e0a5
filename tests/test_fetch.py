"""fetch_dataset against an HTTP server on 127.0.0.1 that serves files written by the test.

The real source URLs and MD5 constants are not exercised: there is no
network here, so each test passes the sums of its own files.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading

import pytest

from nnparity.datasets import FetchError, fetch_dataset, load_dataset
from nnparity.datasets.fetch import SOURCES

from test_datasets import tiny_mnist

TRUNCATED_NAME = "train-images-idx3-ubyte.gz"


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files from the server's directory; with ``truncate`` set, sends half of one file and closes."""

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.server.truncate and self.path.endswith(TRUNCATED_NAME):
            with open(os.path.join(self.server.root, TRUNCATED_NAME), "rb") as handle:
                body = handle.read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def translate_path(self, path):
        return os.path.join(self.server.root, path.lstrip("/").split("?")[0])


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # urllib would send even 127.0.0.1 requests through a proxy named in the environment.
    for variable in ["http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "served"
    tiny_mnist(root, compress=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.root = str(root)
    httpd.truncate = False
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def served_sums(httpd) -> dict[str, str]:
    sums = {}
    for name in SOURCES["mnist"].files:
        with open(os.path.join(httpd.root, name), "rb") as handle:
            sums[name] = hashlib.md5(handle.read()).hexdigest()
    return sums


def base_url(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/"


def test_fetch_writes_verified_files(server, tmp_path):
    data_dir = tmp_path / "data"
    calls = []
    paths = fetch_dataset(
        "mnist", data_dir=str(data_dir), base_url=base_url(server), progress=lambda done, total: calls.append((done, total)),
        checksums=served_sums(server),
    )
    assert sorted(os.path.basename(p) for p in paths) == sorted(SOURCES["mnist"].files)
    for path in paths:
        assert os.path.dirname(path) == str(data_dir / "mnist")
        with open(os.path.join(server.root, os.path.basename(path)), "rb") as served:
            with open(path, "rb") as written:
                assert written.read() == served.read()
    assert not [name for name in os.listdir(data_dir / "mnist") if name.endswith(".part")]
    assert calls[-1][0] == calls[-1][1]

    dataset = load_dataset("mnist", data_dir=str(data_dir))
    assert dataset.x_train.shape == (3, 1, 28, 28)


def test_fetch_skips_present_file(server, tmp_path):
    data_dir = tmp_path / "data"
    fetch_dataset("mnist", data_dir=str(data_dir), base_url=base_url(server), checksums=served_sums(server))
    count = len(server.requests)
    fetch_dataset("mnist", data_dir=str(data_dir), base_url=base_url(server), checksums=served_sums(server))
    assert count == 4
    assert len(server.requests) == count


def test_fetch_wrong_checksum_leaves_nothing(server, tmp_path):
    data_dir = tmp_path / "data"
    sums = served_sums(server)
    sums["t10k-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(FetchError, match="expected MD5 0{32}, got [0-9a-f]{32}"):
        fetch_dataset("mnist", data_dir=str(data_dir), base_url=base_url(server), checksums=sums)
    left = os.listdir(data_dir / "mnist")
    assert "t10k-labels-idx1-ubyte.gz" not in left
    assert "t10k-labels-idx1-ubyte.gz.part" not in left


def test_fetch_interrupted_leaves_nothing(server, tmp_path):
    data_dir = tmp_path / "data"
    server.truncate = True
    with pytest.raises(FetchError, match=TRUNCATED_NAME):
        fetch_dataset("mnist", data_dir=str(data_dir), base_url=base_url(server), checksums=served_sums(server))
    left = os.listdir(data_dir / "mnist") if os.path.isdir(data_dir / "mnist") else []
    assert TRUNCATED_NAME not in left
    assert TRUNCATED_NAME + ".part" not in left


def test_fetch_unreachable_server(tmp_path):
    with pytest.raises(FetchError, match="127.0.0.1:9"):
        fetch_dataset("cifar10", data_dir=str(tmp_path), base_url="http://127.0.0.1:9/")
    assert not os.path.exists(tmp_path / "cifar10" / "cifar-10-python.tar.gz.part")


def test_fetch_unknown_dataset():
    with pytest.raises(ValueError, match="no standard download for dataset 'moons'"):
        fetch_dataset("moons")
