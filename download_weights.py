"""Download the published MCCNet weights into experiments/ and check them.

    python download_weights.py

Fetches `vgg_normalised.pth` (pytorch-AdaIN's release asset, the same file MCCNet's README
links on Google Drive), `decoder_iter_160000.pth` and `mcc_module_iter_160000.pth` (the root
of MCCNet's repository, branch main). Each file is checked before it is put in place:
it must be a PyTorch checkpoint with exactly the keys and shapes of its network. Files
already present and valid are kept.
"""
import os
import sys
import urllib.error
import urllib.request

# cli first, before any package: a package missing there is one line (`cli._missing_module_as_one_line`).
from cli import ArgumentParser, UserError, atomic_output, run

from tqdm import tqdm

import net
import weights

FOLDER = "experiments"
PUBLISHED = {
    "vgg_normalised.pth": "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0/vgg_normalised.pth",
    "decoder_iter_160000.pth": "https://github.com/diyiiyiii/MCCNet/raw/main/decoder_iter_160000.pth",
    "mcc_module_iter_160000.pth": "https://github.com/diyiiyiii/MCCNet/raw/main/mcc_module_iter_160000.pth",
}
NETWORKS = {"vgg_normalised.pth": (net.make_vgg, "the VGG encoder"),
            "decoder_iter_160000.pth": (net.make_decoder, "the decoder"),
            "mcc_module_iter_160000.pth": (net.MCC_Module, "the MCC module")}
# Where the scripts look for each network by default: --vgg_path, --decoder_path, --transform_path.
DEFAULT_PATHS = [os.path.join(FOLDER, name) for name in PUBLISHED]
HOW_TO_GET = ("the published weights: vgg_normalised.pth (pytorch-AdaIN's release assets, or the link in "
              "MCCNet's README), decoder_iter_160000.pth and mcc_module_iter_160000.pth (the root of "
              "github.com/diyiiyiii/MCCNet, branch main), placed in experiments/; "
              "`python download_weights.py` fetches them")
CHUNK = 1 << 16
TIMEOUT_S = 60


def check(path, name):
    """UserError unless `path` holds the network `name` needs, key for key and shape for shape."""
    make, what = NETWORKS[name]
    weights.read_state_dict(path, {k: tuple(v.shape) for k, v in make().state_dict().items()}, what)


def fetch(url, file):
    """Download `url` into the open binary `file`, with a progress bar; UserError on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url), file=sys.stderr) as bar:
                while chunk := response.read(CHUNK):
                    file.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise UserError(f"cannot download {url} ({reason})")


def install(name, url, folder):
    final = os.path.join(folder, name)
    if os.path.isfile(final):
        try:
            check(final, name)
            print(f"{final}: present and valid", file=sys.stderr)
            return
        except UserError as problem:
            print(f"{final}: replacing it ({problem})", file=sys.stderr)
    with atomic_output(final) as file:
        fetch(url, file)
        file.flush()
        try:
            check(file.name, name)
        except UserError as error:  # name the download, not the unfinished file
            raise UserError(str(error).replace(file.name, url))
    print(f"{final}: downloaded and checked", file=sys.stderr)


def manual_instructions(folder):
    lines = [f"  {url}  ->  {os.path.join(folder, name)}" for name, url in PUBLISHED.items()]
    return "get these files by hand and put them in place:\n" + "\n".join(lines)


def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", default=FOLDER, help="folder for the weights")
    parser.add_argument("--base_url", help="fetch every file from this folder URL instead (a mirror), "
                                           "as <base_url>/<file name>")
    args = parser.parse_args(argv)
    try:
        os.makedirs(args.dest, exist_ok=True)
    except OSError as error:
        raise UserError(f"--dest {args.dest}: cannot create it ({error.strerror})")
    for name, url in PUBLISHED.items():
        source = f"{args.base_url.rstrip('/')}/{name}" if args.base_url else url
        try:
            install(name, source, args.dest)
        except UserError as error:
            raise UserError(f"{error}\n{manual_instructions(args.dest)}")


if __name__ == "__main__":
    run(main)
