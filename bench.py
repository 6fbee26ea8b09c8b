"""Speed of our Jittor MCCNet against the PyTorch original, in one run on one machine.

    python bench.py                  # the CPU (about 10 minutes on 2 cores, 22.5 GB of memory)
    python bench.py --device cuda    # a GPU, if both frameworks have CUDA
    python bench.py --profile        # where the time of one stylization goes (add --device cuda)

Prints one markdown table of median seconds: PyTorch running the original's procedure
against ours, and their ratio, for
- one image stylized: the original computes relu5_1 and the content-content MCC pass at
  alpha = 1 and our `net.style_transfer` skips both (same output, tested);
- a video, file to file: the original's loop re-reads, resizes and encodes the style for
  every frame, one frame at a time; test_video.py encodes it once and batches frames;
  "network alone" is test_video.py's network on decoded frames (the rest is decoding,
  encoding and muxing, done in the same thread); on a GPU also with --half (float16),
  against the original in float32;
- a training step (decoder and MCC module, Adam) at the original's setting, a batch of eight
  256×256 crops, and on the CPU also at two 128×128 crops, where the cost of a step besides
  its arithmetic (Jittor builds and schedules its graph anew each step) shows.
With --profile it prints instead, for one stylization at the first image size: each
convolution of the encoder (to relu4_1) and the decoder timed alone in both frameworks,
Jittor's time by kind of operation from its own profiler, and PyTorch's by kernel from its.
Both frameworks get the same random weights (speed does not depend on their values) and
inputs; they run in turns after a warm-up, so that both see the same drift in the load of
a shared machine. Needs PyTorch (requirements-dev.txt).
"""
import collections
import os
import re
import statistics
import tempfile
import time

# cli first, before any package: a package missing there is one line (`cli._missing_module_as_one_line`).
from cli import ArgumentParser, UserError, run

import numpy as np

import backend
import cuda_setup
import jittor as jt
import net
import test_video
import train
import transformer
import video
import torch  # after Jittor's start-up (backend) has run
from tests import torch_mccnet as tm
from tests.clips import make_clip

# Per device: image sizes, video size and frames, training (batch, crop) pairs; (8, 256) is the original's
# training setting, (2, 128) a small one that shows the cost per step besides the arithmetic.
SETTINGS = {
    "cpu": dict(images=[(256, 256), (512, 512)], video=(640, 360, 8), train=[(2, 128), (8, 256)]),
    "cuda": dict(images=[(512, 512), (1080, 1920)], video=(1920, 1080, 32), train=[(8, 256)]),
}


def medians_in_turns(runs, repeat, warmup=2):
    """Median wall-clock seconds of each callable in `runs`, which are called in turns."""
    for _ in range(warmup):
        for call in runs.values():
            call()
    times = {name: [] for name in runs}
    for _ in range(repeat):
        for name, call in runs.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def stylization_runs(oracle, models, device, size):
    rng = np.random.default_rng(0)
    content, style = rng.random((2, 1, 3, *size), dtype=np.float32)

    def original():
        with torch.no_grad():
            tm.style_transfer(*oracle, torch.from_numpy(content).to(device), [torch.from_numpy(style).to(device)]).cpu()

    def ours():
        with jt.no_grad():
            net.style_transfer(*models, jt.array(content), [jt.array(style)]).numpy()
    return dict(original=original, ours=ours)


def original_video_loop(oracle, device, clip, style_path):
    """The original test_video.py's loop: the style re-read, resized and encoded for every frame."""
    with video.VideoReader(clip) as reader:
        for frame, _ in reader.frames():
            style = transformer.resize_shorter_side(transformer.load_image(style_path), frame.shape[0])
            with torch.no_grad():
                out = tm.style_transfer(*oracle, torch.from_numpy(transformer.image_to_array(frame)[None]).to(device),
                                        [torch.from_numpy(transformer.image_to_array(style)[None]).to(device)])
            transformer.array_to_image(out[0].cpu().numpy())


def video_runs(oracle, weight_paths, device, folder, size, half=False):
    width, height, frames = size
    clip, style = os.path.join(folder, "clip.mp4"), os.path.join(folder, "style.jpg")
    make_clip(clip, width, height, frames=frames)
    transformer.Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), np.uint8)).save(style)
    args = test_video.parse_args(["--content", clip, "--style", style, "--output", folder,
                                  "--vgg_path", weight_paths[0], "--decoder_path", weight_paths[1],
                                  "--transform_path", weight_paths[2]])
    stylizer = test_video.Stylizer(test_video.load_models(args), args.alpha, None, half)
    with video.VideoReader(clip) as reader:
        decoded = [frame for frame, _ in reader.frames()]

    def model_alone():
        stylizer.set_styles(test_video.style_arrays([style], height, None, args))
        for batch in test_video.batched(decoded, test_video.frames_per_pass(height, width, args.batch_size, clip)):
            stylizer(batch)
    return dict(original=lambda: original_video_loop(oracle, device, clip, style),
                ours=lambda: test_video.stylize_video(clip, [style], os.path.join(folder, "out.mp4"), stylizer, args),
                model_alone=model_alone)


def training_runs(oracle_seed, weight_paths, device, batch, crop):
    rng = np.random.default_rng(0)
    content, style = rng.random((2, batch, 3, crop, crop), dtype=np.float32)
    noise = (rng.standard_normal(content.shape) * 0.015).astype(np.float32)
    vgg, decoder, mcc = (m.to(device) for m in tm.seeded_weights(oracle_seed))
    oracle_net = tm.Net(vgg, decoder, mcc)
    adam = torch.optim.Adam(list(decoder.parameters()) + list(mcc.parameters()), lr=1e-4)
    tensors = [torch.from_numpy(a).to(device) for a in (content, style, noise)]

    def original():
        adam.zero_grad()
        tm.total_loss(oracle_net(*tensors)).backward()
        adam.step()
        if device == "cuda":
            torch.cuda.synchronize()

    network, *_, optimizer = train.build(weight_paths[0], lr=1e-4)
    jcontent, jstyle = jt.array(content), jt.array(style)
    return dict(original=original,
                ours=lambda: train.train_step(network, optimizer, jcontent, jstyle, noise, 3.0, 10.0))


def convolution_runs(oracle, models, device, size):
    """Each convolution of a stylization at `size` alone (the encoder to relu4_1, the decoder), in both
    frameworks, on an input of the shape it gets there: {layer name: ({original, ours}, its flop)}, where
    flop counts a multiply-add as two."""
    rng = np.random.default_rng(0)
    parts = [("encoder", oracle[0][:net.ENCODER_SLICES[net.RELU4_1 - 1][1]], models[0], (1, 3, *size)),
             ("decoder", oracle[1], models[1], (1, 512, -(-size[0] // 8), -(-size[1] // 8)))]
    runs = {}
    for part, torch_layers, jittor_layers, shape in parts:
        x = torch.from_numpy(rng.random(shape, dtype=np.float32)).to(device)
        for index, layer in enumerate(torch_layers):
            if isinstance(layer, torch.nn.Conv2d):
                name = f"{part} {index}: {layer.in_channels}→{layer.out_channels}, {x.shape[2]}×{x.shape[3]} in"
                (kh, kw), (height, width) = layer.kernel_size, x.shape[2:]  # x is padded already
                flop = 2 * layer.in_channels * layer.out_channels * kh * kw * (height - kh + 1) * (width - kw + 1)
                runs[name] = (_convolution_pair(layer, jittor_layers[index], x.detach().cpu().numpy(), device), flop)
            with torch.no_grad():
                x = layer(x)
    return runs


def _convolution_pair(torch_layer, jittor_layer, array, device):
    torch_input, jittor_input = torch.from_numpy(array).to(device), jt.array(array)

    def original():
        with torch.no_grad():
            torch_layer(torch_input)
        if device == "cuda":
            torch.cuda.synchronize()

    def ours():
        with jt.no_grad():
            jittor_layer(jittor_input).sync()
        jt.sync_all(True)
    return dict(original=original, ours=ours)


def op_kind(name):
    """A short name for the kind of a Jittor profiler entry: `cudnn_conv`, or the ops that one fused kernel runs."""
    fused = re.findall(r"opkey\d+:(\w+)", name)
    return "+".join(sorted(set(fused))) if fused else name.split("«")[0]


def jittor_time_by_op(models, size, repeat):
    """Share of Jittor's time in one stylization at `size` by kind of op (its profiler), largest first."""
    rng = np.random.default_rng(0)
    content, style = (jt.array(a) for a in rng.random((2, 1, 3, *size), dtype=np.float32))
    with jt.no_grad():
        net.style_transfer(*models, content, [style]).sync()
        with jt.profile_scope(warmup=2, rerun=repeat) as report:
            net.style_transfer(*models, content, [style]).sync()
    header, rows = report[0], report[1:]
    totals = collections.Counter()
    for row in rows:
        totals[op_kind(row[0])] += float(row[header.index("TotalTime")])
    return [(kind, spent / sum(totals.values())) for kind, spent in totals.most_common()]


def torch_time_by_kernel(oracle, device, size, repeat):
    """Share of PyTorch's time in one stylization at `size` by kernel (its profiler: on a GPU the CUDA
    kernels, whose names tell which cuDNN engine ran), largest first."""
    stylize = stylization_runs(oracle, None, device, size)["original"]
    stylize()
    on_gpu = device == "cuda"
    activity = torch.profiler.ProfilerActivity.CUDA if on_gpu else torch.profiler.ProfilerActivity.CPU
    with torch.profiler.profile(activities=[activity]) as profiler:
        for _ in range(repeat):
            stylize()
    times = {event.key: event.self_device_time_total if on_gpu else event.self_cpu_time_total
             for event in profiler.key_averages()}
    total = sum(times.values())
    return [(name, spent / total) for name, spent in sorted(times.items(), key=lambda item: -item[1])]


def sgemm_gflops(repeat, n=4096):
    """This machine's float32 matrix product of two n × n matrices, in GFLOP/s: the peak that convolutions,
    which are matrix products, can approach. Jittor's matmul (oneDNN's sgemm on the CPU, cuBLAS on a GPU) is
    the fastest we found, ahead of NumPy's OpenBLAS and PyTorch's MKL (docs/history.md)."""
    a, b = (jt.array(np.random.default_rng(0).random((n, n), dtype=np.float32)) for _ in range(2))

    def product():
        jt.matmul(a, b).sync()
        jt.sync_all(True)
    return 2 * n ** 3 / medians_in_turns({"product": product}, repeat)["product"] / 1e9


def print_profile(oracle, models, device, size, repeat):
    peak = sgemm_gflops(repeat)
    print(f"sgemm (Jittor's float32 matmul, 4096²): {peak:.1f} GFLOP/s, the peak of the last column\n")
    print("| convolution alone (encoder, decoder) | PyTorch, ms | Jittor, ms | ours / original | Jittor, "
          "GFLOP/s | of the peak |\n|---|---|---|---|---|---|")
    sums, flops = [0.0, 0.0], 0
    for name, (runs, flop) in convolution_runs(oracle, models, device, size).items():
        times = medians_in_turns(runs, repeat)
        sums, flops = [sums[0] + times["original"], sums[1] + times["ours"]], flops + flop
        rate = flop / times["ours"] / 1e9
        print(f"| {name} | {times['original'] * 1e3:.3f} | {times['ours'] * 1e3:.3f} | "
              f"{times['ours'] / times['original']:.2f} | {rate:.1f} | {rate / peak:.0%} |")
    rate = flops / sums[1] / 1e9
    print(f"| all of them | {sums[0] * 1e3:.3f} | {sums[1] * 1e3:.3f} | {sums[1] / sums[0]:.2f} | {rate:.1f} | "
          f"{rate / peak:.0%} |")
    print(f"\n| Jittor, one stylization {size[1]}×{size[0]}, by kind of op (its profiler) | share |\n|---|---|")
    for kind, share in jittor_time_by_op(models, size, repeat):
        if share >= 0.005:
            print(f"| {kind[:100]} | {share:.1%} |")
    print("\n| PyTorch, the same stylization, by kernel (its profiler) | share |\n|---|---|")
    for name, share in torch_time_by_kernel(oracle, device, size, repeat):
        if share >= 0.005:
            print(f"| {name[:100]} | {share:.1%} |")


def print_speed_table(oracle, models, weight_paths, device, settings, repeat, folder):
    rows = []
    for height, width in settings["images"]:
        times = medians_in_turns(stylization_runs(oracle, models, device, (height, width)), repeat)
        rows.append((f"one image {width}×{height}, s", times["original"], times["ours"]))
    width, height, frames = settings["video"]
    per_second = {}
    for half in (False, True) if device == "cuda" else (False,):
        flag = ", --half" if half else ""
        times = medians_in_turns(video_runs(oracle, weight_paths, device, folder, settings["video"], half),
                                 max(1, repeat // 2), warmup=1)
        rows.append((f"video {width}×{height}, {frames} frames, file to file{flag}, s", times["original"],
                     times["ours"]))
        rows.append((f"… test_video.py's network alone, on decoded frames{flag}, s", times["original"],
                     times["model_alone"]))
        per_second["--half" if half else "float32"] = frames / times["ours"]
    for batch, crop in settings["train"]:
        times = medians_in_turns(training_runs(0, weight_paths, device, batch, crop), repeat)
        rows.append((f"training step, batch {batch}, {crop}×{crop}, s", times["original"], times["ours"]))
    print("| measured | PyTorch, the original | Jittor, ours | ours / original |\n|---|---|---|---|")
    for name, original, ours in rows:
        print(f"| {name} | {original:.3f} | {ours:.3f} | {ours / original:.2f} |")
    rates = ", ".join(f"{fps:.1f} frames/s ({name})" for name, fps in per_second.items())
    print(f"\nvideo file to file, ours: {rates}")


def machine(device):
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, Jittor's convolutions on cuDNN's {cuda_setup.chosen_conv_api()} API"
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0] if names else 'CPU'}, {os.cpu_count()} cores"


def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both frameworks run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each case (after 2 warm-up runs)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the table: each convolution alone in both frameworks, and Jittor's "
                             "time by kind of op, for one stylization at the first image size")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        raise UserError(f"--repeat {args.repeat}: must be at least 1")
    if args.device == "cuda" and not jt.has_cuda:
        raise UserError(f"--device cuda: {backend.why_no_cuda()}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device cuda: this PyTorch ({torch.__version__}) has no usable CUDA")
    backend.use_device("1" if args.device == "cuda" else "0")
    torch.set_num_threads(os.cpu_count())
    settings = SETTINGS[args.device]
    oracle = [m.to(args.device) for m in tm.seeded_weights(seed=0)]
    print(f"{machine(args.device)}; Jittor {jt.__version__}, PyTorch {torch.__version__} "
          f"({torch.get_num_threads()} threads)\n")
    with tempfile.TemporaryDirectory() as folder:
        weight_paths = [os.path.join(folder, name) for name in ("vgg.pth", "decoder.pth", "mcc.pth")]
        for model, path in zip(tm.seeded_weights(seed=0), weight_paths):
            torch.save(model.state_dict(), path)
        models = net.load_models(*weight_paths)
        if args.profile:
            print_profile(oracle, models, args.device, settings["images"][0], args.repeat)
        else:
            print_speed_table(oracle, models, weight_paths, args.device, settings, args.repeat, folder)


if __name__ == "__main__":
    run(main)
