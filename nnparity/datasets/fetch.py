"""Download MNIST, Fashion-MNIST and CIFAR-10 from their standard sources, with checksums.

The checksums are MD5, because MD5 is what the sources publish: the
Fashion-MNIST README and the CIFAR-10 page list MD5 sums, and the MNIST
sums are the ones torchvision checks against its mirror of the original
files. NOTE: these URLs and sums are not tested against the internet,
because the test machines have no network. The tests serve their own files
on 127.0.0.1 and pass their own sums.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

from nnparity.datasets.base import default_data_dir

logger = logging.getLogger("nnparity")

CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Source:
    """Download location of a dataset: a base URL and the MD5 of each file name under it."""

    base_url: str
    files: dict[str, str]


SOURCES = {
    # yann.lecun.com often refuses downloads; this is the mirror torchvision uses.
    "mnist": Source(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": Source(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": Source(
        "https://www.cs.toronto.edu/~kriz/",
        {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    ),
}


class FetchError(RuntimeError):
    """A download failed or its checksum did not match; no partial file is left behind."""


def file_md5(path: str) -> str:
    """Return the hex MD5 digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, part_path: str, progress: Callable[[int, int | None], None] | None) -> None:
    """Stream ``url`` into ``part_path``; raise FetchError if the transfer fails or ends early."""
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS)
    except (urllib.error.URLError, OSError) as error:
        raise FetchError(f"download of {url} failed: {error}") from error

    with response, open(part_path, "wb") as part:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        next_log = 0.1
        while True:
            try:
                block = response.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as error:
                # A connection closed before Content-Length bytes raises IncompleteRead, an HTTPException.
                raise FetchError(f"download of {url} failed after {done} bytes: {error}") from error
            if not block:
                break
            part.write(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
            if total and done >= next_log * total:
                logger.info("%s: %d%% of %d bytes", url, int(100 * done / total), total)
                next_log += 0.1

    if total is not None and done != total:
        raise FetchError(f"download of {url} ended early: received {done} of {total} bytes")


def fetch_file(url: str, path: str, md5: str, progress: Callable[[int, int | None], None] | None = None) -> str:
    """Download ``url`` to ``path`` through ``path + '.part'``, renaming only once the MD5 matches.

    On any failure the part file is deleted, so a file at ``path`` is always
    complete. An existing ``path`` with the right checksum is kept as it is.
    """
    if os.path.isfile(path) and file_md5(path) == md5:
        logger.info("%s is already present with the expected checksum", path)
        return path

    os.makedirs(os.path.dirname(path), exist_ok=True)
    part_path = path + ".part"
    logger.info("downloading %s to %s", url, path)
    try:
        _download(url, part_path, progress)
        got = file_md5(part_path)
        if got != md5:
            raise FetchError(f"checksum mismatch for {url}: expected MD5 {md5}, got {got}; the download was discarded")
        os.replace(part_path, path)
    except BaseException:
        # BaseException, so that Ctrl-C during a download also removes the part file.
        if os.path.exists(part_path):
            os.remove(part_path)
        raise
    return path


def fetch_dataset(
    name: str,
    data_dir: str | None = None,
    base_url: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    *,
    checksums: dict[str, str] | None = None,
) -> list[str]:
    """Download dataset ``name`` into ``<data_dir>/<name>/`` and return the paths of its files.

    ``base_url`` replaces the source's URL directory (each file is fetched
    from ``base_url + '/' + file name``); ``checksums`` replaces the MD5
    sums per file name. Both exist for tests against a local server.
    ``progress(done_bytes, total_bytes)`` is called after every block;
    ``total_bytes`` is None when the server sends no Content-Length.
    """
    if name not in SOURCES:
        raise ValueError(f"no standard download for dataset {name!r}; fetchable datasets are {sorted(SOURCES)}")
    source = SOURCES[name]
    sums = dict(source.files)
    if checksums is not None:
        unknown = sorted(set(checksums) - set(sums))
        if unknown:
            raise ValueError(f"checksums for unknown file(s) {unknown}; {name!r} has files {sorted(sums)}")
        sums.update(checksums)

    target_dir = os.path.join(default_data_dir(data_dir), name)
    url_dir = (base_url or source.base_url).rstrip("/") + "/"
    created = _missing_directories(target_dir)
    paths = []
    try:
        for file_name, md5 in sums.items():
            paths.append(fetch_file(url_dir + file_name, os.path.join(target_dir, file_name), md5, progress))
    except BaseException:
        # Files already fetched stay, but a directory this call created and left empty is removed.
        for directory in created:
            try:
                os.rmdir(directory)
            except OSError:
                break
        raise
    logger.info("dataset %s is in %s", name, target_dir)
    return paths


def _missing_directories(path: str) -> list[str]:
    """Return ``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while path and not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing
