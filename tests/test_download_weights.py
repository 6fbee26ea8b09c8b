"""download_weights.py against a loopback HTTP server holding files in the published layout."""
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest

import weights
from conftest import REPO

SCRIPT = os.path.join(REPO, "download_weights.py")


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/site; yields (site folder, base URL)."""
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def download(base_url, dest):
    return subprocess.run([sys.executable, SCRIPT, "--base_url", base_url, "--dest", str(dest)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def test_downloads_checks_and_keeps(server, weight_files, tmp_path):
    site, url = server
    for path in weight_files:
        shutil.copy(path, site)
    dest = tmp_path / "experiments"
    first = download(url, dest)
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(dest)) == sorted(os.path.basename(p) for p in weight_files)
    for path in weight_files:
        assert (dest / os.path.basename(path)).read_bytes() == open(path, "rb").read()
    second = download(url, dest)
    assert second.returncode == 0 and second.stderr.count("present and valid") == 3


def test_a_missing_file_names_every_source(server, weight_files, tmp_path):
    site, url = server
    shutil.copy(weight_files[0], site)
    dest = tmp_path / "experiments"
    result = download(url, dest)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot download" in result.stderr and "decoder_iter_160000.pth" in result.stderr
    assert "github.com/diyiiyiii/MCCNet" in result.stderr and "pytorch-AdaIN" in result.stderr
    assert sorted(os.listdir(dest)) == ["vgg_normalised.pth"]  # no partial file left


def test_a_wrong_file_is_refused(server, weight_files, tmp_path):
    site, url = server
    shutil.copy(weight_files[0], site)
    shutil.copy(weight_files[1], site / "decoder_iter_160000.pth")
    shutil.copy(weight_files[1], site / "mcc_module_iter_160000.pth")  # the decoder under the MCC's name
    dest = tmp_path / "experiments"
    result = download(url, dest)
    assert result.returncode != 0
    assert "not mcc_module_iter_160000.pth weights" in result.stderr
    assert sorted(os.listdir(dest)) == ["decoder_iter_160000.pth", "vgg_normalised.pth"]
    weights.read_state_dict(str(dest / "decoder_iter_160000.pth"))
