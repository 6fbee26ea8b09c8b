"""The CUDA path, checked on a GPU machine: Jittor on CUDA against PyTorch on CUDA.

Not part of the CPU test suite (CI has no GPU). Run by tests/cuda_check.sh on a lent GPU
machine; prints one JSON line per figure and a markdown table at the end.

Exactness: the same seeded weights in both frameworks; a 256 × 256 stylization (alpha 1 and
0.6) and one training step (losses, updated parameters) compared with PyTorch's TF32 off
(TF32 rounds to 10 mantissa bits and would hide real differences). Speed: median latency of
a stylization at 256 and 512 and of a training step (batch 2 at 128² and batch 8 at 256²,
the original's training size), PyTorch with its default settings (what a user gets).
Jittor's cuDNN convolutions allow TF32 (cuDNN's default math; Jittor has no switch), so
cuda_check.sh runs this twice: with NVIDIA_TF32_OVERRIDE=0 (float32 everywhere: the
exactness figures) and with the defaults (the timings a user gets).
"""
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import backend  # noqa: E402  (before jittor)
import jittor as jt  # noqa: E402
import net  # noqa: E402
import torch  # noqa: E402
import torch_mccnet as tm  # noqa: E402

# `python tests/cuda_check.py cpu` runs the same checks on the CPU: a dry run of this script;
# a second argument `inference` leaves the training step out (it compiles many more kernels).
DEVICE = sys.argv[1] if len(sys.argv) > 1 else "cuda"
PARTS = sys.argv[2] if len(sys.argv) > 2 else "all"


TRAINING_CASES = ((2, 128), (8, 256))  # the benchmark's CPU case and the original's training size


def torch_sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def report(**fields):
    print(json.dumps(fields), flush=True)


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def jittor_models(oracle):
    models = net.make_vgg(), net.make_decoder(), net.MCC_Module(512)
    for model, reference in zip(models, oracle):
        model.load_parameters({k: v.detach().cpu().numpy() for k, v in reference.state_dict().items()})
    return models


def synchronised_median(run, sync, warmup=2, repeat=10):
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_stylization(oracle, jmodels):
    rng = np.random.default_rng(0)
    content, style = rng.random((2, 1, 3, 256, 256), dtype=np.float32)
    for alpha in (1.0, 0.6):
        with torch.no_grad():
            expected = tm.style_transfer(*oracle, torch.from_numpy(content).to(DEVICE),
                                         [torch.from_numpy(style).to(DEVICE)], alpha=alpha).cpu().numpy()
        with jt.no_grad():
            actual = net.style_transfer(*jmodels, jt.array(content), [jt.array(style)], alpha=alpha).numpy()
        report(check="stylization 256", alpha=alpha, relative_error=relative_error(actual, expected))


def check_training_step(oracle, jmodels):
    rng = np.random.default_rng(1)
    content, style = rng.random((2, 2, 3, 64, 64), dtype=np.float32)
    noise = (rng.standard_normal(content.shape) * 0.015).astype(np.float32)
    vgg, decoder, mcc = oracle
    torch_net = tm.Net(vgg, decoder, mcc)
    torch_params = list(decoder.parameters()) + list(mcc.parameters())
    torch_opt = torch.optim.Adam(torch_params, lr=1e-4)
    torch_losses = torch_net(*(torch.from_numpy(a).to(DEVICE) for a in (content, style, noise)))
    torch_opt.zero_grad()
    tm.total_loss(torch_losses).backward()
    torch_opt.step()

    jvgg, jdecoder, jmcc = jmodels
    jittor_net = net.Net(jvgg, jdecoder, jmcc)
    jittor_opt = net.Adam(list(jdecoder.parameters()) + list(jmcc.parameters()), lr=1e-4)
    jittor_losses = jittor_net(jt.array(content), jt.array(style), jt.array(noise))
    jittor_opt.step(net.total_loss(jittor_losses))
    for name, value in torch_losses.items():
        report(check="training loss", term=name,
               relative_error=relative_error(jittor_losses[name].numpy(), value.detach().cpu().numpy()))
    # Norm-relative over all parameters: Adam's first step is about ±lr per weight, and a
    # gradient within rounding of zero may take either sign in either framework.
    jittor_after = np.concatenate([p.numpy().ravel() for p in jittor_opt.param_groups[0]["params"]])
    torch_after = np.concatenate([p.detach().cpu().numpy().ravel() for p in torch_params])
    report(check="training step parameters",
           norm_relative_error=float(np.linalg.norm(jittor_after - torch_after) / np.linalg.norm(torch_after)))


def time_stylization(oracle, jmodels, rows):
    rng = np.random.default_rng(2)
    for size in (256, 512):
        content, style = rng.random((2, 1, 3, size, size), dtype=np.float32)
        tc, ts = torch.from_numpy(content).to(DEVICE), torch.from_numpy(style).to(DEVICE)
        jc, js = jt.array(content), jt.array(style)

        def torch_run():
            with torch.no_grad():
                tm.style_transfer(*oracle, tc, [ts])

        def jittor_run():
            with jt.no_grad():
                net.style_transfer(*jmodels, jc, [js]).sync()

        t = synchronised_median(torch_run, torch_sync)
        j = synchronised_median(jittor_run, lambda: jt.sync_all(True))
        rows.append((f"stylization {size}×{size} (PyTorch: original procedure, Jittor: ours)", t, j))
        report(timing=rows[-1][0], torch_s=t, jittor_s=j)


def time_training(seed, rows, cases=TRAINING_CASES):
    for batch, size in cases:
        rng = np.random.default_rng(3)
        content, style = rng.random((2, batch, 3, size, size), dtype=np.float32)
        noise = (rng.standard_normal(content.shape) * 0.015).astype(np.float32)
        vgg, decoder, mcc = (m.to(DEVICE) for m in tm.seeded_weights(seed))
        torch_net = tm.Net(vgg, decoder, mcc)
        torch_opt = torch.optim.Adam(list(decoder.parameters()) + list(mcc.parameters()), lr=1e-4)
        tensors = [torch.from_numpy(a).to(DEVICE) for a in (content, style, noise)]

        def torch_run():
            torch_opt.zero_grad()
            tm.total_loss(torch_net(*tensors)).backward()
            torch_opt.step()

        jvgg, jdecoder, jmcc = jittor_models((vgg, decoder, mcc))
        jittor_net = net.Net(jvgg, jdecoder, jmcc)
        jittor_opt = net.Adam(list(jdecoder.parameters()) + list(jmcc.parameters()), lr=1e-4)
        jtensors = [jt.array(a) for a in (content, style, noise)]

        def jittor_run():
            jittor_opt.step(net.total_loss(jittor_net(*jtensors)))

        t = synchronised_median(torch_run, torch_sync)
        j = synchronised_median(jittor_run, lambda: jt.sync_all(True))
        rows.append((f"training step, batch {batch}, {size}×{size}", t, j))
        report(timing=rows[-1][0], torch_s=t, jittor_s=j)


def main():
    backend.use_device("1" if DEVICE == "cuda" else "0")
    device_name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "CPU"
    report(device=device_name, jittor=jt.__version__, torch=torch.__version__,
           cudnn_in_jittor=bool(getattr(jt.compile_extern, "cudnn", None)))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    oracle = [m.to(DEVICE) for m in tm.seeded_weights(seed=0)]
    jmodels = jittor_models(oracle)
    check_stylization(oracle, jmodels)
    if PARTS == "all":
        check_training_step(oracle, jmodels)
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default again for the timings
    torch.backends.cudnn.benchmark = False
    rows = []
    time_stylization(oracle, jittor_models(oracle), rows)
    if PARTS == "all":
        time_training(0, rows)
    print(f"\n{device_name}, Jittor {jt.__version__}, PyTorch {torch.__version__}\n")
    print("| case | PyTorch (ms) | Jittor (ms) | Jittor / PyTorch |")
    print("|---|---|---|---|")
    for name, t, j in rows:
        print(f"| {name} | {t * 1e3:.1f} | {j * 1e3:.1f} | {j / t:.2f} |")


if __name__ == "__main__":
    main()
