"""download_weights.py against a loopback HTTP server holding files in the published layout."""
import functools
import http.server
import os
import shutil
import threading

import pytest

import download_weights
import weights
from conftest import run_script


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


def test_downloads_checks_and_keeps(server, weight_files, tmp_path, run_main):
    site, url = server
    for path in weight_files:
        shutil.copy(path, site)
    dest = tmp_path / "experiments"
    code, lines = run_main(download_weights, "--base_url", url, "--dest", dest)
    assert code == 0, lines
    assert sorted(os.listdir(dest)) == sorted(os.path.basename(p) for p in weight_files)
    for path in weight_files:
        assert (dest / os.path.basename(path)).read_bytes() == open(path, "rb").read()
    code, lines = run_main(download_weights, "--base_url", url, "--dest", dest)
    assert code == 0 and sum("present and valid" in line for line in lines) == 3


def test_a_missing_file_names_every_source(server, weight_files, tmp_path):
    """The one run of download_weights.py in a child process: the exit code as the shell sees it."""
    site, url = server
    shutil.copy(weight_files[0], site)
    dest = tmp_path / "experiments"
    result = run_script("download_weights.py", "--base_url", url, "--dest", dest, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot download" in result.stderr and "decoder_iter_160000.pth" in result.stderr
    assert "github.com/diyiiyiii/MCCNet" in result.stderr and "pytorch-AdaIN" in result.stderr
    # One line per file to fetch by hand: its source and where it goes.
    by_hand = [line for line in result.stderr.splitlines() if "  ->  " in line]
    assert len(by_hand) == 3 and all(line.rstrip().endswith(".pth") for line in by_hand), result.stderr
    assert sorted(os.listdir(dest)) == ["vgg_normalised.pth"]  # no partial file left


def test_a_wrong_file_is_refused(server, weight_files, tmp_path, run_main):
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
