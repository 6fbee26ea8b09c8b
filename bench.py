"""Speed of our Jittor MCCNet against the PyTorch oracle, in one run on one machine.

Prints a markdown table of median latencies and Jittor/PyTorch ratios for a 256 × 256 and
a 512 × 512 stylization: the original's procedure (relu5_1 and the content-content pass
computed, as its test script does) and the lean one (`net.style_transfer`, which skips
what alpha = 1 does not need), on the CPU and, when both frameworks have CUDA, on the GPU.
Also: one Jittor run without oneDNN (why `jittor-offline` is a requirement) and the time
of a first `import net` on a warm Jittor cache. Weights are random: speed does not
depend on their values. Needs PyTorch (requirements-dev.txt).

    python bench.py            # about 4 minutes on 2 cores
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

import backend
import jittor as jt
import net

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "tests"))

import torch  # noqa: E402  (after our Jittor start-up; the oracle needs it)
import torch_mccnet as tm  # noqa: E402

SIZES = (256, 512)
NO_ONEDNN_SIZE = 64  # without oneDNN a 256 × 256 pass takes minutes


def median_seconds(run, warmup, repeat):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def jittor_original_procedure(vgg, decoder, mcc, content, style):
    """What the original test script computes at alpha = 1: relu3_1..relu5_1 and mcc(c, c) too."""
    slices = net.encoder_slices(vgg)

    def encode(x):
        feats = []
        for enc in slices:
            x = enc(x)
            feats.append(x)
        return feats[2:]
    content_feats, style_feats = encode(content), encode(style)
    fccc = mcc(content_feats, content_feats)
    feat = 1.0 * mcc(content_feats, style_feats) + 0.0 * fccc
    return decoder(feat)


def torch_lean_procedure(vgg, decoder, mcc, content, style):
    return decoder(mcc.MCCN(vgg[:31](content), vgg[:31](style)))


def jittor_runner(procedure, models, content, style):
    def run():
        with jt.no_grad():
            procedure(*models, jt.array(content), jt.array(style)).numpy()
    return run


def torch_runner(procedure, models, content, style, device):
    def run():
        with torch.no_grad():
            out = procedure(*models, torch.from_numpy(content).to(device), torch.from_numpy(style).to(device))
            out.cpu().numpy()
    return run


def torch_original_procedure(vgg, decoder, mcc, content, style):
    return tm.style_transfer(vgg, decoder, mcc, content, [style], alpha=1.0)


def jittor_lean_procedure(vgg, decoder, mcc, content, style):
    return net.style_transfer(vgg, decoder, mcc, content, [style])


def load_jittor(oracle):
    models = net.make_vgg(), net.make_decoder(), net.MCC_Module(512)
    for model, reference in zip(models, oracle):
        model.load_parameters({k: v.numpy() for k, v in reference.state_dict().items()})
    return models


def measure_device(device, oracle, repeat):
    """Rows (procedure, size, pytorch_s, jittor_s) on 'cpu' or 'cuda'."""
    backend.use_device("1" if device == "cuda" else "0")
    jmodels = load_jittor(oracle)
    tmodels = [m.to(device) for m in oracle]
    rows = []
    rng = np.random.default_rng(0)
    for size in SIZES:
        content, style = rng.random((2, 1, 3, size, size), dtype=np.float32)
        n = repeat if size <= 256 else max(3, repeat // 2)
        for name, tproc, jproc in (("original procedure", torch_original_procedure, jittor_original_procedure),
                                   ("lean (alpha = 1)", torch_lean_procedure, jittor_lean_procedure)):
            t = median_seconds(torch_runner(tproc, tmodels, content, style, device), 1, n)
            j = median_seconds(jittor_runner(jproc, jmodels, content, style), 2, n)
            rows.append((f"{device.upper()} {name}", size, t, j))
            print(f"  {rows[-1][0]} {size}: PyTorch {t:.3f} s, Jittor {j:.3f} s", file=sys.stderr, flush=True)
    return rows


def jittor_without_onednn_seconds():
    """A small stylization in a child process whose Jittor has oneDNN switched off."""
    env = dict(os.environ, use_mkl="0")
    child = subprocess.run([sys.executable, __file__, "--no-onednn-child"], env=env, cwd=HERE,
                           capture_output=True, text=True)
    if child.returncode != 0:
        return None
    return json.loads(child.stdout.strip().splitlines()[-1])["seconds"]


def no_onednn_child():
    rng = np.random.default_rng(0)
    content, style = rng.random((2, 1, 3, NO_ONEDNN_SIZE, NO_ONEDNN_SIZE), dtype=np.float32)
    models = net.make_vgg(), net.make_decoder(), net.MCC_Module(512)
    seconds = median_seconds(jittor_runner(jittor_lean_procedure, models, content, style), 1, 1)
    print(json.dumps({"seconds": seconds}))


def import_seconds():
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import net"], cwd=HERE, check=True, capture_output=True)
    return time.perf_counter() - start


def machine_description():
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"Jittor {jt.__version__}, PyTorch {torch.__version__}, {torch.get_num_threads()} PyTorch threads")


def jittor_with_onednn_seconds(oracle):
    backend.use_device("0")
    rng = np.random.default_rng(0)
    content, style = rng.random((2, 1, 3, NO_ONEDNN_SIZE, NO_ONEDNN_SIZE), dtype=np.float32)
    return median_seconds(jittor_runner(jittor_lean_procedure, load_jittor(oracle), content, style), 1, 3)


def print_table(rows, onednn, no_onednn, import_s):
    print(f"Machine: {machine_description()}\n")
    print("| stylization | size | PyTorch (s) | Jittor (s) | Jittor / PyTorch |")
    print("|---|---|---|---|---|")
    for name, size, t, j in rows:
        print(f"| {name} | {size}×{size} | {t:.3f} | {j:.3f} | {j / t:.2f} |")
    original = {(n.split()[0], s): j for n, s, _, j in rows if "original" in n}
    for name, size, t, j in rows:
        if "lean" in name:
            print(f"\nLean vs original procedure, Jittor {name.split()[0]} {size}×{size}: "
                  f"{j / original[(name.split()[0], size)]:.2f}× the time", end="")
    print("\n")
    if no_onednn is not None:
        print(f"Jittor CPU lean {NO_ONEDNN_SIZE}×{NO_ONEDNN_SIZE}: {onednn:.3f} s with oneDNN, "
              f"{no_onednn:.2f} s without it (use_mkl=0): {no_onednn / onednn:.0f}× slower")
    print(f"First `import net` on a warm Jittor cache: {import_s:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case at 256×256 (half at 512)")
    parser.add_argument("--no-onednn-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_onednn_child:
        return no_onednn_child()
    torch.set_num_threads(os.cpu_count())
    oracle = tm.seeded_weights(seed=0)
    rows = measure_device("cpu", oracle, args.repeat)
    if jt.has_cuda and torch.cuda.is_available():
        rows += measure_device("cuda", oracle, args.repeat)
    print_table(rows, jittor_with_onednn_seconds(oracle), jittor_without_onednn_seconds(), import_seconds())


if __name__ == "__main__":
    main()
