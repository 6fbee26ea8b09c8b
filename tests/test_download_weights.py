"""download_weights.py against a loopback HTTP server holding files in the published layout."""
import functools
import hashlib
import http.server
import os
import shutil
import threading

import pytest

import download_weights
import weights
from conftest import run_script


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # its line per request would be taken for the script's
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/site; yields (site folder, base URL)."""
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def digest_of_bytes(path, kind):
    """A file's digest from its bytes read whole: SHA-256, or git's blob id (git's format: the SHA-1 of a header,
    then the bytes; `test_digests_are_those_of_sha256sum_and_git` checks both against the tools' own)."""
    data = open(path, "rb").read()
    if kind == "SHA-256":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def published_as_test_files(weight_files, monkeypatch):
    """PUBLISHED with the digests of the test's weight files (of the same kinds as the real ones')."""
    published = {}
    for path in weight_files:
        url, kind, _ = download_weights.PUBLISHED[os.path.basename(path)]
        published[os.path.basename(path)] = (url, kind, digest_of_bytes(path, kind))
    monkeypatch.setattr(download_weights, "PUBLISHED", published)


def test_digests_are_those_of_sha256sum_and_git(tmp_path):
    """`sha256sum` and `git hash-object` give these for "hello\\n"."""
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello\n")
    for digest in (download_weights.digest, digest_of_bytes):
        assert digest(path, "SHA-256") == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        assert digest(path, "git blob id") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_downloads_checks_and_keeps(server, weight_files, published_as_test_files, tmp_path, run_main):
    site, url = server
    for path in weight_files:
        shutil.copy(path, site)
    dest = tmp_path / "experiments"
    code, lines = run_main(download_weights, "--base_url", url, "--dest", dest)
    assert code == 0, lines
    assert sum("downloaded and checked, the published file" in line for line in lines) == 3, lines
    assert sorted(os.listdir(dest)) == sorted(os.path.basename(p) for p in weight_files)
    for path in weight_files:
        assert (dest / os.path.basename(path)).read_bytes() == open(path, "rb").read()
    code, lines = run_main(download_weights, "--base_url", url, "--dest", dest)
    assert code == 0 and sum("present and valid, the published file: kept" in line for line in lines) == 3, lines


def test_a_download_of_other_bytes_than_the_published_file_is_refused(server, weight_files, tmp_path, run_main):
    """A mirror's file with the right keys and shapes, but not the published bytes (the test's own weights)."""
    site, url = server
    for path in weight_files:
        shutil.copy(path, site)
    dest = tmp_path / "experiments"
    code, lines = run_main(download_weights, "--base_url", url, "--dest", dest)
    got = digest_of_bytes(weight_files[0], "SHA-256")
    assert code == 1 and lines[0] == (
        f"error: {url}/vgg_normalised.pth: not the published vgg_normalised.pth (its SHA-256 is {got}, the "
        "published file's 804ca2835ecf7539f0cd2a7ac3c18ce81e6f8468969ae7117ac0c148d286bb4a)"), lines
    assert os.listdir(dest) == []


def test_a_valid_copy_present_is_kept_and_said_to_differ_from_the_published_file(weight_files, tmp_path, run_main):
    """Nothing is downloaded (the server does not exist): a copy saved again, or one's own training, stays."""
    dest = tmp_path / "experiments"
    dest.mkdir()
    for path in weight_files:
        shutil.copy(path, dest)
    code, lines = run_main(download_weights, "--base_url", "http://127.0.0.1:9", "--dest", dest)
    assert code == 0 and lines == [f"{dest / os.path.basename(p)}: present and valid, but not byte for byte the "
                                   "published file: kept" for p in weight_files], lines


def test_a_missing_file_names_every_source(server, tmp_path):
    """The one run of download_weights.py in a child process: the exit code as the shell sees it."""
    site, url = server
    dest = tmp_path / "experiments"
    result = run_script("download_weights.py", "--base_url", url, "--dest", dest, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot download {url}/vgg_normalised.pth" in result.stderr
    assert "github.com/diyiiyiii/MCCNet" in result.stderr and "pytorch-AdaIN" in result.stderr
    assert "then run this again to check them" in result.stderr
    # One line per file to fetch by hand: its source and where it goes.
    by_hand = [line for line in result.stderr.splitlines() if "  ->  " in line]
    assert len(by_hand) == 3 and all(line.rstrip().endswith(".pth") for line in by_hand), result.stderr
    assert os.listdir(dest) == []  # no partial file left


def test_a_wrong_file_is_refused(server, weight_files, published_as_test_files, tmp_path, run_main):
    site, url = server
    shutil.copy(weight_files[0], site)
    shutil.copy(weight_files[1], site / "decoder_iter_160000.pth")
    shutil.copy(weight_files[1], site / "mcc_module_iter_160000.pth")  # the decoder under the MCC's name
    dest = tmp_path / "experiments"
    code, lines = run_main(download_weights, "--base_url", url, "--dest", dest)
    assert code == 1
    assert any(f"{url}/mcc_module_iter_160000.pth: not the MCC module weights" in line for line in lines), lines
    assert sorted(os.listdir(dest)) == ["decoder_iter_160000.pth", "vgg_normalised.pth"]  # nothing half-written
    weights.read_state_dict(str(dest / "decoder_iter_160000.pth"))
