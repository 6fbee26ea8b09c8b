"""Download the published MCCNet weights into experiments/ and check them.

    python download_weights.py

Fetches `vgg_normalised.pth` (pytorch-AdaIN's release asset, the same network MCCNet's README
links on Google Drive), `decoder_iter_160000.pth` and `mcc_module_iter_160000.pth` (the root
of MCCNet's repository, branch main). Each file is checked before it is put in place: it must
be a PyTorch checkpoint with exactly the keys and shapes of its network, and the published
file byte for byte (its digest). Files already present and valid are kept, saying whether
they are the published ones: run it again after fetching them by hand, to check them.
"""
import hashlib
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
# The published files: where each is, and the digest of its bytes. MCCNet's two are plain files of its repository
# (added on 2020-12-16, unchanged since): their git blob ids, as `git ls-tree` lists them. The VGG is pytorch-AdaIN's
# release asset: its SHA-256.
PUBLISHED = {
    "vgg_normalised.pth": ("https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0/vgg_normalised.pth",
                           "SHA-256", "804ca2835ecf7539f0cd2a7ac3c18ce81e6f8468969ae7117ac0c148d286bb4a"),
    "decoder_iter_160000.pth": ("https://github.com/diyiiyiii/MCCNet/raw/main/decoder_iter_160000.pth",
                                "git blob id", "6909cef08b38228c2dd820dde5eb478f488b610b"),
    "mcc_module_iter_160000.pth": ("https://github.com/diyiiyiii/MCCNet/raw/main/mcc_module_iter_160000.pth",
                                   "git blob id", "41508528c732c52e199961a5716418bf54ecda2c"),
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


def digest(path, kind):
    """The hex digest of a file's bytes: its SHA-256, or its git blob id (the SHA-1 of "blob <size>\\0" and the
    bytes, what `git hash-object` prints)."""
    prefix = b"blob %d\0" % os.path.getsize(path)
    with open(path, "rb") as f:
        return hashlib.file_digest(f, hashlib.sha256 if kind == "SHA-256" else lambda: hashlib.sha1(prefix)).hexdigest()


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
    _, kind, published = PUBLISHED[name]
    if os.path.isfile(final):
        try:
            check(final, name)
            # A copy of other bytes with the right keys and shapes (one saved again, one's own training) is the
            # user's to keep; saying so tells it from the published one.
            which = "the published file" if digest(final, kind) == published else \
                "but not byte for byte the published file"
            print(f"{final}: present and valid, {which}: kept", file=sys.stderr)
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
        downloaded = digest(file.name, kind)
        if downloaded != published:
            raise UserError(f"{url}: not the published {name} (its {kind} is {downloaded}, the published file's "
                            f"{published})")
    print(f"{final}: downloaded and checked, the published file", file=sys.stderr)


def manual_instructions(folder):
    lines = [f"  {url}  ->  {os.path.join(folder, name)}" for name, (url, _, _) in PUBLISHED.items()]
    return ("get these files by hand and put them in place, then run this again to check them:\n"
            + "\n".join(lines))


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
    for name, (url, _, _) in PUBLISHED.items():
        source = f"{args.base_url.rstrip('/')}/{name}" if args.base_url else url
        try:
            install(name, source, args.dest)
        except UserError as error:
            raise UserError(f"{error}\n{manual_instructions(args.dest)}")


if __name__ == "__main__":
    run(main)
