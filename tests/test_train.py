"""train.py and sampler.py: the sampler's stream, learning, checkpoints, resume, MPI, bad input."""
import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jittor as jt
import numpy as np
import pytest
import torch
from PIL import Image

import backend
import cpu_layers
import net
import sampler
import test_video
import torch_mccnet as tm
import train
import transformer
import weights
from cli import UserError
from conftest import (JITTOR_GPU_MEMORY_ERROR, REPO, load_jittor_models, mpirun, mpirun_each, needs_mpi,
                      peak_memory_of_script, run_script)


def write_images(folder, names, size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture
def dataset_folder(tmp_path):
    """Five images, one of them nested two levels deep, plus files that are not images."""
    folder = tmp_path / "data"
    write_images(folder, ["a.jpg", "b.png", "style1/c.jpg", "style1/deep/d.jpg", "style2/e.bmp"])
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    return folder


def test_finds_images_at_any_depth_and_only_images(dataset_folder):
    names = [os.path.relpath(p, dataset_folder) for p in sampler.find_images(str(dataset_folder))]
    assert names == ["a.jpg", "b.png", "style1/c.jpg", "style1/deep/d.jpg", "style2/e.bmp"]


def test_follows_linked_folders_once_each(tmp_path):
    """A dataset assembled from links to folders kept elsewhere (a cluster's shared datasets), as torchvision's
    ImageFolder reads it; a link back up, or a second link to one folder, adds nothing and does not loop."""
    write_images(tmp_path / "shared" / "coco", ["x.jpg", "y.jpg"])
    data = tmp_path / "data"
    write_images(data, ["a.jpg"])
    (data / "coco").symlink_to(tmp_path / "shared" / "coco")
    (data / "coco_again").symlink_to(tmp_path / "shared" / "coco")
    (data / "loop").symlink_to(data)
    names = [os.path.relpath(p, data) for p in sampler.find_images(str(data))]
    assert names == ["a.jpg", "coco/x.jpg", "coco/y.jpg"]


def test_finds_phone_photos_and_avif(tmp_path):
    write_images(tmp_path, ["a.heic", "b.HEIF", "c.avif"])
    names = [os.path.basename(p) for p in sampler.find_images(str(tmp_path))]
    assert names == ["a.heic", "b.HEIF", "c.avif"]
    assert all(transformer.load_image(p, as_shown=False).size == (40, 30) for p in sampler.find_images(str(tmp_path)))


def stream_paths(folder, n, seed=0, start=0):
    data = sampler.InfiniteImageFolder(str(folder), batch_size=2, length=n, seed=seed, start=start)
    return [os.path.basename(data.path_at(start + k)) for k in range(n)]


def test_stream_never_ends_reshuffles_and_is_reproducible(dataset_folder):
    paths = stream_paths(dataset_folder, 20)
    epochs = [paths[i:i + 5] for i in range(0, 20, 5)]
    assert all(sorted(e) == ["a.jpg", "b.png", "c.jpg", "d.jpg", "e.bmp"] for e in epochs)  # each epoch: all once
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled
    assert stream_paths(dataset_folder, 20) == paths  # same seed, same stream
    assert stream_paths(dataset_folder, 20, seed=1) != paths
    assert stream_paths(dataset_folder, 7, start=13) == paths[13:20]  # resumes mid-stream


def test_batches_are_full_across_epoch_boundaries(dataset_folder):
    data = sampler.InfiniteImageFolder(str(dataset_folder), batch_size=2, length=12, seed=0)
    batches = [b.numpy() for b in data]
    assert len(batches) == 6 and all(b.shape == (2, 3, 256, 256) for b in batches)
    assert all(0.0 <= b.min() and b.max() <= 1.0 for b in batches)
    again = [b.numpy() for b in sampler.InfiniteImageFolder(str(dataset_folder), batch_size=2, length=12, seed=0)]
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))  # crops too are reproducible


def test_a_scan_above_test_videos_pixel_limit_is_trained_on(tmp_path, capfd):
    """As the original trains on it: Pillow refuses only a decompression bomb (above 178,956,970 pixels)."""
    Image.new("RGB", (5000, 4000), (90, 120, 200)).save(tmp_path / "scan.png")  # 20 million pixels, 60 kB
    data = sampler.InfiniteImageFolder(str(tmp_path), batch_size=1, length=1, seed=0)
    np.testing.assert_allclose(data[0][:, 0, 0], np.array([90, 120, 200]) / 255, atol=1e-6)
    assert data.skipped == 0 and capfd.readouterr().err == ""


def test_corrupt_image_is_skipped_with_a_warning(dataset_folder, capfd):
    (dataset_folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)).save(photo, "HEIF")
    (dataset_folder / "a.heic").write_bytes(photo.getvalue()[:-100])  # libheif's message ends in a line break
    data = sampler.InfiniteImageFolder(str(dataset_folder), batch_size=1, length=10, seed=0)
    samples = [data[i] for i in range(10)]
    assert all(s.shape == (3, 256, 256) for s in samples)
    expected = 0  # each time a broken image comes up, and again if its stand-in (the next sample) is one
    for i in range(10):
        k = i
        while data.path_at(k).endswith(("b.png", "a.heic")):
            expected, k = expected + 1, k + 1
    assert data.skipped == expected >= 2
    warnings = capfd.readouterr().err.splitlines()
    assert any("a.heic" in line for line in warnings)
    assert all(line.startswith("warning: skipping unreadable image") for line in warnings), warnings


@pytest.mark.parametrize("make,expected", [
    (lambda d: d / "nope", "no such folder"),
    (lambda d: d / "readme.txt", "readme.txt: not a folder"),
    (lambda d: d, "holds no image files"),
])
def test_bad_folders(tmp_path, make, expected):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=expected):
        sampler.find_images(str(make(tmp_path)))


def test_noise_of_a_sample_does_not_depend_on_how_the_batch_is_split():
    whole = train.noise_for(0, 7, 10, (4, 3, 8, 8))
    halves = [train.noise_for(0, 7, 10 + 2 * r, (2, 3, 8, 8)) for r in (0, 1)]
    np.testing.assert_array_equal(whole, np.concatenate(halves))
    sigma = whole.std()
    assert 0.01 * 0.9 < sigma < 0.02 * 1.1 and whole.dtype == np.float32


def test_hundred_steps_on_one_pair_halve_the_loss(weight_files):
    """The overfitting check: 100 iterations on one fixed 48 × 48 pair."""
    vgg, decoder, mcc = load_jittor_models(weight_files)
    network = net.Net(vgg, decoder, mcc)
    optimizer = net.Adam(list(decoder.parameters()) + list(mcc.parameters()), lr=1e-4)
    rng = np.random.default_rng(0)
    content, style = (jt.array(rng.random((1, 3, 48, 48), dtype=np.float32)) for _ in range(2))
    totals = []
    for iteration in range(100):
        optimizer.lr = train.learning_rate(1e-4, 5e-5, iteration)
        noise = train.noise_for(0, iteration, iteration, content.shape)
        totals.append(train.train_step(network, optimizer, content, style, noise, 3.0, 10.0)["total"])
    assert totals[-1] <= 0.5 * totals[0], f"total loss {totals[0]:.4g} -> {totals[-1]:.4g}"


def train_argv(weight_files, data, save_dir, log_dir, *extra):
    argv = ["--content_dir", data, "--style_dir", data, "--vgg", weight_files[0], "--save_dir", save_dir,
            "--log_dir", log_dir, "--n_threads", "0", "--save_model_interval", "2", "--sample_interval", "2",
            "--log_interval", "1", "--crop_size", "32", *extra]
    return [str(a) for a in argv]


@pytest.fixture(scope="module")
def trained(weight_files, tmp_path_factory):
    """Four iterations straight; and the same run killed after iteration 4 was logged but with its
    last checkpoint at 2, resumed to 4."""
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    write_images(data, ["a.jpg", "b.jpg", "c/d.jpg"], size=(300, 200))
    straight, resumed = root / "straight", root / "resumed"
    train.main(train_argv(weight_files, data, straight / "models", straight / "logs", "--batch_size", "1",
                          "--max_iter", "4", "--save_pth"))
    (resumed / "models").mkdir(parents=True)
    (resumed / "logs").mkdir(parents=True)
    for name in ("decoder_iter_2.pkl", "mcc_module_iter_2.pkl", "state_iter_2.pkl"):
        shutil.copy(straight / "models" / name, resumed / "models" / name)
    shutil.copy(straight / "logs" / "losses.csv", resumed / "logs" / "losses.csv")  # rows up to 4
    (resumed / "models" / ".tmp-0123abcd-state_iter_4.pkl").write_bytes(b"half a checkpoint")  # kill -9
    train.main(train_argv(weight_files, data, resumed / "models", resumed / "logs", "--batch_size", "1",
                          "--max_iter", "4", "--resume"))
    return dict(root=root, data=data, straight=straight, resumed=resumed)


def test_checkpoints_logs_and_samples(trained):
    models, logs = trained["straight"] / "models", trained["straight"] / "logs"
    assert sorted(os.listdir(models)) == sorted(
        f"{n}_iter_{i}.{e}" for i in (2, 4) for n, e in
        (("decoder", "pkl"), ("mcc_module", "pkl"), ("state", "pkl"), ("decoder", "pth"), ("mcc_module", "pth")))
    rows = (logs / "losses.csv").read_text().splitlines()
    assert rows[0] == "iteration,lr,noise,content,style,identity1,identity2,tv,total" and len(rows) == 5
    assert float(rows[2].split(",")[1]) == pytest.approx(1e-4 / (1 + 5e-5 * 1))
    assert Image.open(logs / "sample_iter_4.png").size == (3 * 32, 32)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(logs))


def tensorboard_values(folder):
    """{(tag, step): value (a float, or an image's PNG bytes)} from the TensorBoard event files in `folder`, read as
    TensorBoard reads them (records of: length, its CRC, an Event protocol buffer, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event
    found = {}
    for name in sorted(n for n in os.listdir(folder) if n.startswith("events.out.tfevents")):
        data = (folder / name).read_bytes()
        while data:
            length = int.from_bytes(data[:8], "little")
            event, data = Event.FromString(data[12:12 + length]), data[16 + length:]
            for value in event.summary.value:
                is_scalar = value.WhichOneof("value") == "simple_value"
                found[value.tag, event.step] = value.simple_value if is_scalar else value.image.encoded_image_string
    return found


def test_tensorboard_reads_the_losses_and_samples(trained):
    logs = trained["straight"] / "logs"
    found = tensorboard_values(logs)
    rows = [row.split(",") for row in (logs / "losses.csv").read_text().splitlines()[1:]]
    columns = {"loss_content": 3, "loss_style": 4, "total_loss": 8}
    assert {(tag, int(row[0])): pytest.approx(float(row[column]), rel=1e-5) for row in rows
            for tag, column in columns.items()} == {key: v for key, v in found.items() if key[0] in columns}
    images = {key: Image.open(io.BytesIO(v)) for key, v in found.items() if key[0] not in columns}
    assert sorted(images) == [(tag, step) for tag in ("Ics", "content", "style") for step in (2, 4)]
    assert all(image.size == (32, 32) for image in images.values())


@pytest.mark.parametrize("filled_by", ["samples", "losses"])
def test_a_log_disk_that_fills_ends_the_run_in_one_line(trained, weight_files, full_disk, tmp_path, run_main,
                                                        filled_by):
    """TensorBoard's writer thread died on a full disk and the run then waited for it forever. Which log write
    meets the full disk first (the events, losses.csv or a sample grid) depends on the grids' PNG sizes, which
    differ with the CPU's round-off: each gives one line naming what it could not write."""
    if filled_by == "losses":  # the losses alone fill what is left within a few iterations
        (full_disk / "filler").write_bytes(bytes(60 * 1024))
    argv = train_argv(weight_files, trained["data"], tmp_path / "models", full_disk, "--batch_size", "1",
                      "--max_iter", "100", "--save_model_interval", "1000",
                      "--sample_interval", "1" if filled_by == "samples" else "1000")
    code, lines = run_main(train, *argv)
    assert code == 1 and len(lines) == 1, lines
    disk = re.escape(str(full_disk))
    where = rf"--log_dir {disk}: cannot write the logs there|{disk}/(losses\.csv|sample_iter_\d+\.png): cannot write it"
    assert re.fullmatch(rf"error: ({where}) \(No space left on device\).*", lines[0]), lines
    assert not [name for name in os.listdir(full_disk) if name.startswith(".tmp-")]


def assert_same_parameters(folder_a, folder_b, iteration, rtol=1e-5, atol=1e-7):
    for name in (f"decoder_iter_{iteration}.pkl", f"mcc_module_iter_{iteration}.pkl"):
        a, b = (weights.read_state_dict(str(folder / name)) for folder in (folder_a, folder_b))
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=rtol, atol=atol, err_msg=f"{name} {key}")


def logged_rows(log_dir):
    """losses.csv as one dict of numbers per iteration."""
    with open(os.path.join(log_dir, "losses.csv")) as f:
        return [{name: float(value) for name, value in row.items()} for row in csv.DictReader(f)]


def test_the_loss_weights_learning_rate_and_seed_reach_every_step(trained, weight_files, tmp_path, run_main):
    """--content_weight and --style_weight weigh the logged total, --lr and --lr_decay set each step's rate (the
    rate of iteration i, logged on row i + 1: lr / (1 + lr_decay · i)), and another --seed makes another run."""
    flags = ["--batch_size", "1", "--lr", "3e-4", "--lr_decay", "0.5", "--content_weight", "7",
             "--style_weight", "2"]
    runs = {seed: tmp_path / f"seed{seed}" for seed in (5, 6)}
    for seed, folder in runs.items():
        code, lines = run_main(train, *train_argv(weight_files, trained["data"], folder / "models", folder / "logs",
                                                  *flags, "--max_iter", "3", "--seed", str(seed)))
        assert code == 0, lines
    rows = logged_rows(runs[5] / "logs")
    weights_ = dict(net.LOSS_WEIGHTS, content=7.0, style=2.0)
    for row in rows:
        assert row["lr"] == pytest.approx(3e-4 / (1 + 0.5 * (row["iteration"] - 1)), rel=1e-5)
        assert row["total"] == pytest.approx(sum(w * row[name] for name, w in weights_.items()), rel=1e-5)
    assert [row["iteration"] for row in rows] == [1, 2, 3]
    assert all(rows[0][name] != logged_rows(runs[6] / "logs")[0][name] for name in weights_)


def test_resumed_run_equals_the_uninterrupted_one(trained):
    assert_same_parameters(trained["straight"] / "models", trained["resumed"] / "models", 4)
    rows = (trained["resumed"] / "logs" / "losses.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]  # 3 and 4 once each, from the resumed run
    assert rows == (trained["straight"] / "logs" / "losses.csv").read_text().splitlines()
    assert not [p for p in os.listdir(trained["resumed"] / "models") if p.startswith(".tmp-")]


def test_resume_auto_starts_afresh_then_resumes_as_the_uninterrupted_run(trained, weight_files, tmp_path, run_main):
    """One command for a job that a cluster may requeue: the first run starts afresh, the next resumes."""
    models = tmp_path / "models"
    argv = train_argv(weight_files, trained["data"], models, tmp_path / "logs", "--batch_size", "1", "--resume", "auto")
    code, lines = run_main(train, *argv, "--max_iter", "2")
    assert code == 0 and lines == [f"--resume auto: no checkpoint in {models}, starting afresh"], lines
    code, lines = run_main(train, *argv, "--max_iter", "4")
    assert code == 0 and lines == [f"resuming from {models / 'state_iter_2.pkl'}"], lines
    assert_same_parameters(trained["straight"] / "models", models, 4)


def test_resume_skips_a_damaged_newest_checkpoint(trained, weight_files, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(trained["straight"] / "models", models)
    state = models / "state_iter_4.pkl"
    state.write_bytes(state.read_bytes()[:5000])
    train.main(train_argv(weight_files, trained["data"], models, tmp_path / "logs", "--batch_size", "1",
                          "--max_iter", "4", "--resume"))
    err = capsys.readouterr().err
    assert "warning: skipping a damaged checkpoint: " + str(state) in err
    assert f"resuming from {models / 'state_iter_2.pkl'}" in err
    (models / "state_iter_2.pkl").write_bytes(b"")
    state.write_bytes(b"")
    with pytest.raises(UserError, match="every checkpoint in .* is damaged"):
        train.main(train_argv(weight_files, trained["data"], models, tmp_path / "logs", "--max_iter", "5",
                              "--resume"))


def test_pth_export_loads_in_the_pytorch_original(trained):
    decoder, mcc = tm.make_decoder(), tm.MCC_Module(512)
    decoder.load_state_dict(torch.load(trained["straight"] / "models" / "decoder_iter_4.pth"), strict=True)
    mcc.load_state_dict(torch.load(trained["straight"] / "models" / "mcc_module_iter_4.pth"), strict=True)
    ours = weights.read_state_dict(str(trained["straight"] / "models" / "mcc_module_iter_4.pkl"))
    assert np.array_equal(mcc.MCCN.fc.weight.detach().numpy(), ours["MCCN.fc.weight"])


def test_checkpoint_runs_in_test_video(trained, weight_files, tmp_path, run_main):
    models = trained["straight"] / "models"
    write_images(tmp_path, ["photo.png"], size=(48, 40))
    image = tmp_path / "photo.png"
    code, lines = run_main(test_video, "--content", image, "--style", image, "--vgg_path", weight_files[0],
                           "--decoder_path", models / "decoder_iter_4.pkl",
                           "--transform_path", models / "mcc_module_iter_4.pkl",
                           "--output", tmp_path / "out", "--content_size", "0")
    assert code == 0, lines
    assert Image.open(tmp_path / "out" / "photo_stylized_photo.jpg").size == (48, 40)


def bad_train_cases(tmp_path, weight_files):
    data = tmp_path / "data"
    write_images(data, ["a.jpg"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("x")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for i in range(3):
        (corrupt / f"{i}.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file")
    ok = ["--content_dir", data, "--style_dir", data, "--vgg", weight_files[0], "--crop_size", "32",
          "--save_dir", tmp_path / "m", "--log_dir", tmp_path / "l", "--n_threads", "0", "--max_iter", "1"]

    def with_(**changes):
        argv = list(ok)
        for flag, value in changes.items():
            if f"--{flag}" in argv:
                argv[argv.index(f"--{flag}") + 1] = value
            else:
                argv += [f"--{flag}"] + ([value] if value is not None else [])
        return argv
    return {
        "missing content": (with_(content_dir=tmp_path / "nope"), "no such folder"),
        "no images": (with_(style_dir=empty), "holds no image files"),
        "missing vgg": (with_(vgg=tmp_path / "vgg.pth"), "vgg.pth: no such file"),
        "wrong vgg": (with_(vgg=weight_files[1]), "not the VGG encoder weights"),
        "save dir": (with_(save_dir=blocked / "m"), "--save_dir"),
        "batch size": (with_(batch_size="0"), "--batch_size 0: must be at least 1"),
        "crop not a multiple of 8": (with_(crop_size="100"), "--crop_size 100: must be a multiple of 8"),
        "lr": (with_(lr="0"), "--lr 0.0: must be a positive number"),
        "style weight nan": (with_(style_weight="nan"), "--style_weight nan: must be a number"),
        "unknown flag": (with_(epochs="3"), "unrecognized arguments: --epochs 3"),
        "resume without checkpoint": (with_(resume=None), "no complete checkpoint"),
        "only corrupt styles, workers": (with_(style_dir=corrupt, n_threads="2"), "100 unreadable images in a row"),
        "only corrupt styles": (with_(style_dir=corrupt), "100 unreadable images in a row"),
    }


@pytest.mark.parametrize("case", ["missing content", "no images", "missing vgg", "wrong vgg", "save dir",
                                  "batch size", "crop not a multiple of 8", "lr", "style weight nan", "unknown flag",
                                  "resume without checkpoint",
                                  "only corrupt styles, workers", "only corrupt styles"])
def test_bad_input_is_one_clear_line(tmp_path, weight_files, case, run_main):
    argv, expected = bad_train_cases(tmp_path, weight_files)[case]
    code, lines = run_main(train, *argv)
    errors = [line for line in lines if not line.startswith("warning: skipping unreadable image")]
    assert code == 1
    assert len(errors) == 1 and errors[0].startswith("error: ") and expected in errors[0], lines


def test_a_step_too_large_for_the_gpus_memory_is_one_line(tmp_path, weight_files, monkeypatch, run_main):
    """Jittor's error where the GPU's memory is short (`JITTOR_GPU_MEMORY_ERROR`) ended the run in a traceback."""
    def step_on_a_small_gpu(*args, **kwargs):
        raise RuntimeError(JITTOR_GPU_MEMORY_ERROR)

    monkeypatch.setattr(train, "train_step", step_on_a_small_gpu)
    data = tmp_path / "data"
    write_images(data, ["a.jpg", "b.jpg"])
    code, lines = run_main(train, *train_argv(weight_files, data, tmp_path / "m", tmp_path / "l", "--batch_size", "2",
                                              "--max_iter", "4"))
    assert code == 1 and lines[-1] == ("error: --batch_size 2 --crop_size 32: a training step does not fit in the "
                                       "GPU's memory: lower them")
    assert [line for line in lines if "Traceback" in line or "Execute fused operator" in line] == []


def test_a_step_larger_than_the_memory_is_one_line_before_it_starts(tmp_path, weight_files, monkeypatch, run_main):
    argv, _ = bad_train_cases(tmp_path, weight_files)["batch size"]
    argv[argv.index("--batch_size") + 1] = "1"
    argv[argv.index("--crop_size") + 1] = "1024"
    monkeypatch.setattr(backend, "memory_limit", lambda: 8e9)
    code, lines = run_main(train, *argv)
    assert code == 1 and lines == ["error: --batch_size 1 --crop_size 1024 --n_threads 0: a training step on the CPU "
                                   "takes at least 20.2 GB of memory, and this process may use 8.0 GB: lower them (the "
                                   "original's 8 x 256² takes about 11 GB, and each data worker 0.1 GB or more)"]
    assert not os.path.exists(tmp_path / "m")  # refused before anything is written
    monkeypatch.setattr(backend, "memory_limit", lambda: 12e9)
    train.check_that_a_step_fits_in_memory(8, 256, 2)  # the original's fits in 12 GB, but not with another rank
    with pytest.raises(UserError, match=r"--n_threads 16: a training step on the CPU takes at least 13.5 GB of memory "
                                        r"\(3.2 GB for its 32 data workers\), and this process may use 12.0 GB"):
        train.check_that_a_step_fits_in_memory(8, 256, 16)  # nor with the original's 16 data workers per stream
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    with pytest.raises(UserError, match=r"takes at least 10.3 GB of memory, and this process may use 6.0 GB \(1/2 of "
                                        r"what this node gives, for its 2 ranks\)"):
        train.check_that_a_step_fits_in_memory(8, 256, 0)


def test_the_memory_estimate_is_at_most_what_a_step_takes(tmp_path, weight_files):
    """The estimate refuses only what cannot fit: a step of batch 1 at 256² (in a process of its own, whose peak
    resident size its parent reads) takes at least that."""
    data = tmp_path / "data"
    write_images(data, ["a.jpg", "b.jpg"], size=(300, 200))
    argv = train_argv(weight_files, data, tmp_path / "m", tmp_path / "l", "--batch_size", "1", "--crop_size",
                      "256", "--max_iter", "1")
    peak = peak_memory_of_script("train.py", *argv)
    assert train.STEP_BYTES + train.STEP_BYTES_PER_PIXEL * 256 ** 2 <= peak < 4e9, peak


@pytest.mark.parametrize("script, shown", [
    (train, ["--lr LR initial learning rate (default: 0.0001)", "iterations in all (default: 160000)",
             "(per rank under MPI) (default: 8)", "iterations between checkpoints (default: 10000)",
             "(default: experiments/vgg_normalised.pth)", "runs are reproducible (default: 0)"]),
    (test_video, ["folder for the results (default: output)", "(default: experiments/decoder_iter_160000.pth)",
                  "reconstructs the content (default: 1.0)"])])
def test_help_shows_what_a_run_does_without_each_flag(script, shown, capsys):
    with pytest.raises(SystemExit) as exit_:
        script.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    assert [fragment for fragment in shown if fragment not in text] == []
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize("cpus, workers", [(1, 1), (2, 2), (12, 12), (64, 16)])
def test_data_workers_default_to_the_processs_cpus_at_most_the_originals_16(cpus, workers, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert train.parse_args(["--content_dir", "c", "--style_dir", "s"]).n_threads == workers
    assert train.parse_args(["--content_dir", "c", "--style_dir", "s", "--n_threads", "3"]).n_threads == 3


def test_a_fresh_run_moves_an_earlier_runs_logs_aside(trained, weight_files, tmp_path, run_main):
    """With another --save_dir and the same --log_dir, a fresh run overwrote the earlier run's losses.csv and sample
    grids, and mixed the two runs' curves in TensorBoard."""
    logs = tmp_path / "logs"
    shutil.copytree(trained["straight"] / "logs", logs)
    earlier = {name: (logs / name).read_bytes() for name in os.listdir(logs)}
    argv = train_argv(weight_files, trained["data"], tmp_path / "models", logs, "--batch_size", "1", "--max_iter", "2")
    code, lines = run_main(train, *argv)
    aside = [name for name in os.listdir(logs) if name.startswith("earlier_")]
    assert code == 0 and len(aside) == 1 and lines == [f"--log_dir {logs} held the logs of an earlier run: moved to "
                                                       f"{logs / aside[0]}"]
    assert {name: (logs / aside[0] / name).read_bytes() for name in os.listdir(logs / aside[0])} == earlier
    assert len((logs / "losses.csv").read_text().splitlines()) == 3  # the header and this run's 2 iterations
    assert sorted(name for name in os.listdir(logs) if name.endswith(".png")) == ["sample_iter_2.png"]
    code, lines = run_main(train, *argv[:-2], "--max_iter", "4", "--resume")  # a resumed run moves nothing
    assert code == 0 and len(lines) == 1 and lines[0].startswith("resuming from"), lines
    assert len([name for name in os.listdir(logs) if name.startswith("earlier_")]) == 1
    assert len((logs / "losses.csv").read_text().splitlines()) == 5


def test_a_fresh_run_refuses_a_save_dir_with_an_earlier_runs_checkpoints(trained, weight_files, tmp_path, run_main):
    """A forgotten --resume: the fresh run would start losses.csv anew and overwrite the earlier run's checkpoints
    one by one as it reached their iterations."""
    models, logs = tmp_path / "models", tmp_path / "logs"
    shutil.copytree(trained["straight"] / "models", models)
    shutil.copytree(trained["straight"] / "logs", logs)
    before = {name: (models / name).read_bytes() for name in os.listdir(models)}
    losses = (logs / "losses.csv").read_text()
    argv = train_argv(weight_files, trained["data"], models, logs, "--batch_size", "1", "--max_iter", "2")
    code, lines = run_main(train, *argv)
    assert code == 1 and lines == [
        f"error: --save_dir {models} holds the checkpoints of an earlier run, the newest "
        f"{models / 'state_iter_4.pkl'}: --resume continues it; to start afresh, give another --save_dir or remove "
        "them"], lines
    assert {name: (models / name).read_bytes() for name in os.listdir(models)} == before
    assert (logs / "losses.csv").read_text() == losses
    # checkpoints that --resume cannot read are no earlier run to continue, but the way out is the same
    for name in os.listdir(models):
        if name.startswith("state_iter_"):
            (models / name).write_bytes(b"")
    code, lines = run_main(train, *argv, "--resume")
    assert code == 1 and lines[-1] == (f"error: --resume: every checkpoint in {models} is damaged; to start afresh, "
                                       "give another --save_dir or remove them"), lines


def start_training(argv, mpi_ranks=None):
    """train.py started in the background, in a process group of its own (under mpirun with `mpi_ranks`), its
    stderr piped."""
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    launcher = ["mpirun", *root, "--oversubscribe", "-np", str(mpi_ranks)] if mpi_ranks else []
    return subprocess.Popen([*launcher, sys.executable, "train.py", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def processes_of(marker):
    """The ids of the processes whose command line holds `marker`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if marker in f.read().decode(errors="replace"):
                found.append(int(pid))
    return found


def wait_for_iterations(job, losses, count, timeout):
    """Until losses.csv holds `count` iterations: the run is training."""
    deadline = time.time() + timeout
    while not (losses.exists() and len(losses.read_text().splitlines()) > count):
        if job.poll() is not None:
            pytest.fail(f"the run ended (status {job.returncode}) before {count} iterations; its stderr ends: "
                        f"{job.stderr.read()[-3000:]}")
        assert time.time() < deadline, f"not {count} iterations within {timeout} s"
        time.sleep(0.1)


def check_stopped_with_a_checkpoint(job, save, logs):
    """The run said in one line where it stopped and exited 138; its checkpoint there is whole and the newest,
    and losses.csv ends there. Returns that iteration."""
    stderr = job.communicate(timeout=MPI_TIMEOUT)[1]
    stops = [line for line in stderr.splitlines() if line.startswith("stopped at")]
    assert job.returncode == 138 and len(stops) == 1, stderr[-3000:]
    match = re.fullmatch(r"stopped at iteration (\d+) of 10000 on SIGUSR1: its checkpoint (\S+) is written; "
                         r"--resume continues", stops[0])
    assert match, stops
    iteration, state = int(match.group(1)), match.group(2)
    assert train.complete_checkpoints(str(save))[0] == state == str(save / f"state_iter_{iteration}.pkl")
    weights.read_state_dict(state)
    assert int((logs / "losses.csv").read_text().splitlines()[-1].split(",")[0]) == iteration
    assert not [name for name in os.listdir(save) if name.startswith(".tmp-")]
    return iteration


def test_a_run_with_data_workers_ends_when_it_is_done(trained, weight_files, tmp_path):
    """The workers inherited the main process's Python handler of SIGTERM, which Jittor's `terminate` sends them at
    the end; a worker waiting in Jittor's C++ for room in its buffer never ran it, and the run, done, waited for
    that worker at its exit forever. Now each worker takes SIGTERM's default action."""
    save = tmp_path / "models"
    job = start_training(train_argv(weight_files, trained["data"], save, tmp_path / "logs", "--batch_size", "1",
                                    "--max_iter", "20", "--n_threads", "2"))
    try:
        stderr = job.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        pytest.fail("the run did not end within 2 minutes")
    assert job.returncode == 0, stderr[-2000:]
    assert train.complete_checkpoints(str(save))[0] == str(save / "state_iter_20.pkl")


def test_ctrl_c_ends_a_run_and_its_data_workers(trained, weight_files, tmp_path):
    """Ctrl-C reaches every process of the terminal's group: the main process says "interrupted" and leaves at
    once, and its data workers, which ignore it, end with it (they waited forever, orphaned, holding their shared
    memory)."""
    save, logs = tmp_path / "models", tmp_path / "logs"
    job = start_training(train_argv(weight_files, trained["data"], save, logs, "--batch_size", "1",
                                    "--max_iter", "10000", "--n_threads", "2"))
    wait_for_iterations(job, logs / "losses.csv", 3, timeout=120)
    os.killpg(job.pid, signal.SIGINT)
    stderr = job.communicate(timeout=60)[1]
    assert job.returncode == 130 and stderr.strip().splitlines()[-1] == "interrupted", stderr[-2000:]
    deadline = time.time() + 10
    while processes_of(str(save)):
        assert time.time() < deadline, "data workers outlived the run"
        time.sleep(0.1)


def test_sigusr1_writes_a_checkpoint_and_stops(trained, weight_files, tmp_path, capsys):
    """`kill -USR1`, or Slurm's `--signal=USR1@120` before a time limit, which signals every process of the job
    step (here the data workers and Jittor's compile workers too, which must survive it): the run ends its
    iteration, writes its checkpoint there and stops, where SIGTERM and Ctrl-C end it at once; --resume
    continues from there."""
    save, logs = tmp_path / "models", tmp_path / "logs"

    def argv(max_iter, *extra):
        return train_argv(weight_files, trained["data"], save, logs, "--batch_size", "1", "--max_iter", max_iter,
                          "--save_model_interval", "1000", "--n_threads", "2", *extra)
    job = start_training(argv(10000))
    wait_for_iterations(job, logs / "losses.csv", 3, timeout=120)
    os.killpg(job.pid, signal.SIGUSR1)
    iteration = check_stopped_with_a_checkpoint(job, save, logs)
    capsys.readouterr()
    train.main(argv(iteration + 1, "--resume"))
    assert f"resuming from {save / f'state_iter_{iteration}.pkl'}" in capsys.readouterr().err


def test_sigterm_ends_a_run_in_one_line_and_leaves_no_temporary(trained, weight_files, tmp_path):
    """What Slurm pre-emption and `docker stop` send: "interrupted", exit 143, whole checkpoints only."""
    save = tmp_path / "models"
    argv = train_argv(weight_files, trained["data"], save, tmp_path / "logs", "--batch_size", "1",
                      "--max_iter", "10000", "--save_model_interval", "1")
    job = subprocess.Popen([sys.executable, "train.py", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (save / "state_iter_2.pkl").exists():
        assert time.time() < deadline and job.poll() is None, "no checkpoint within 2 minutes"
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)
    stderr = job.communicate(timeout=60)[1]
    assert job.returncode == 143 and stderr.strip().splitlines()[-1] == "interrupted"
    assert not [name for name in os.listdir(save) if name.startswith(".tmp-")]
    for state in train.complete_checkpoints(str(save)):
        weights.read_state_dict(state)  # every checkpoint left is whole


def test_a_diverged_run_stops_in_one_line_before_its_checkpoint(trained, weight_files, tmp_path, run_main):
    """A learning rate far too large: the first update throws the weights to ±lr, and the next loss overflows.
    The squares of the weights overflow at once, so the run stops before it writes those weights (it used to
    write them, and to propose resuming from them)."""
    save = tmp_path / "models"
    argv = train_argv(weight_files, trained["data"], save, tmp_path / "logs", "--batch_size", "1",
                      "--max_iter", "10", "--save_model_interval", "1", "--lr", "1e30")
    code, lines = run_main(train, *argv)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0] == (f"error: iteration 1: training diverged ({train.SQUARES} inf); no checkpoint was written "
                        "for it; try a fresh start with a lower --lr")
    assert train.complete_checkpoints(str(save)) == []
    assert len((tmp_path / "logs" / "losses.csv").read_text().splitlines()) == 1  # the header
    assert run_main(train, *argv[:-2], "--lr", "1e-4", "--max_iter", "3")[0] == 0
    code, lines = run_main(train, *argv[:-2], "--lr", "1e30", "--max_iter", "5", "--resume")
    assert code == 1 and lines[0] == f"resuming from {save / 'state_iter_3.pkl'}", lines
    assert lines[1] == (f"error: iteration 4: training diverged ({train.SQUARES} inf); no checkpoint was written "
                        f"for it; try --resume {save / 'state_iter_3.pkl'} with a lower --lr")


def test_a_nan_weight_hidden_from_the_loss_stops_the_run(trained, weight_files, tmp_path, run_main, monkeypatch):
    """Jittor's own ReLU (x > 0 ? x : 0), the one a GPU runs, turns NaN into 0: behind the first decoder layer, NaN
    weights gave finite losses, and the run trained on, into NaN checkpoints."""
    monkeypatch.setattr(cpu_layers.ReLU, "execute", lambda self, x: self.on_gpu(x))
    adam_step = net.Adam.step

    def step_that_leaves_a_nan_weight_at_iteration_3(optimizer, loss):
        adam_step(optimizer, loss)
        if optimizer.n_step == 3:  # as an infinite gradient would (Adam's inf / inf)
            first_decoder_weight = optimizer.param_groups[0]["params"][0]
            first_decoder_weight.update(jt.array(np.float32(np.nan)).broadcast(first_decoder_weight.shape))
    monkeypatch.setattr(net.Adam, "step", step_that_leaves_a_nan_weight_at_iteration_3)
    save = tmp_path / "models"
    argv = train_argv(weight_files, trained["data"], save, tmp_path / "logs", "--batch_size", "1",
                      "--max_iter", "6", "--save_model_interval", "1")
    code, lines = run_main(train, *argv)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0] == (f"error: iteration 3: training diverged ({train.SQUARES} nan); no checkpoint was written "
                        f"for it; try --resume {save / 'state_iter_2.pkl'} with a lower --lr")
    assert train.complete_checkpoints(str(save))[0] == str(save / "state_iter_2.pkl")


def test_exit_code_of_a_user_error_in_a_child_process(tmp_path, weight_files):
    argv, expected = bad_train_cases(tmp_path, weight_files)["missing content"]
    result = run_script("train.py", *argv)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: ")


# ---------------------------------------------------------------- several processes

@needs_mpi
def test_two_mpi_ranks_hold_identical_parameters(weight_files, tmp_path):
    result = mpirun(2, os.path.join(REPO, "tests", "mpi_steps.py"), weight_files[0], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for step in (0, 1):
        rank0, rank1 = (np.load(tmp_path / f"rank{r}_step{step}.npz") for r in (0, 1))
        assert int(rank0["world"]) == int(rank1["world"]) == 2
        names = [k for k in rank0.files if k != "world"]
        assert len(names) == 28
        for name in names:
            np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=f"step {step} {name}")


@needs_mpi
def test_mpi_ranks_draw_disjoint_shares_of_the_single_process_stream(tmp_path):
    folder = tmp_path / "uniform"
    folder.mkdir()
    for i in range(1, 8):  # seven images: batches cross epoch boundaries
        Image.fromarray(np.full((20, 24, 3), 20 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    result = mpirun(2, os.path.join(REPO, "tests", "mpi_sampler.py"), folder, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # the same stream in one process, with the global batch of 2 ranks × --batch_size 2
    single = sampler.InfiniteImageFolder(str(folder), batch_size=4, length=16, seed=0, crop=16)
    expected = [[int(os.path.basename(single.path_at(4 * b + i))[:-4]) for i in range(4)] for b in range(4)]
    for b, global_batch in enumerate(expected):
        first, second = ranks[0]["batches"][b], ranks[1]["batches"][b]
        assert len(first) == len(second) == 2  # each rank trains on its own --batch_size images
        assert first + second == global_batch, f"batch {b}: ranks {first} + {second}, single process {global_batch}"


def assert_same_training(folder_a, folder_b, iteration, moment_tolerance=None, lr=1e-4):
    """Two runs on the same data, noise and global batch, whose gradients differ by float32 round-off
    only (the ranks' shares are summed in another order than one process sums its batch).

    Both have consumed the same number of samples. Adam's first moment is a running mean of the
    gradients: after the first steps the two runs' moments agree to `moment_tolerance`
    (norm-relative over all parameters; measured 2.3e-6 after 2 steps, and 2.2e-4 when the TV
    loss is not weighted by the number of ranks, the bug this would catch). Later the runs
    drift apart, by an amount that depends on the CPU's kernels (after 4 steps 8e-5 with
    AVX-512, 3e-3 with AVX2): Adam's first steps move a parameter by about lr · sign(gradient),
    and where a gradient is within round-off of zero the runs may step in opposite directions.
    That bounds the parameters at any step: they differ by at most 2 · lr per step.
    """
    a, b = (weights.read_state_dict(str(folder / f"state_iter_{iteration}.pkl")) for folder in (folder_a, folder_b))
    assert int(a["samples"]) == int(b["samples"])
    if moment_tolerance is not None:
        moments = [k for k in a if k.startswith("m.")]
        m_a, m_b = (np.concatenate([state[k].ravel() for k in moments]) for state in (a, b))
        assert np.linalg.norm(m_a - m_b) / np.linalg.norm(m_a) <= moment_tolerance
    for name in (f"decoder_iter_{iteration}.pkl", f"mcc_module_iter_{iteration}.pkl"):
        a, b = (weights.read_state_dict(str(folder / name)) for folder in (folder_a, folder_b))
        assert max(np.abs(a[k] - b[k]).max() for k in a) <= 2 * lr * iteration * 1.01, name


MPI_TIMEOUT = 120  # a 2-rank run of a few 32 × 32 iterations takes ~5 s (warm); a hang fails here


@needs_mpi
def test_mpirun_train_ends_resumes_and_equals_one_process_with_the_global_batch(trained, weight_files, tmp_path):
    ranks, single = tmp_path / "ranks", tmp_path / "single"
    argv = train_argv(weight_files, trained["data"], ranks / "models", ranks / "logs", "--batch_size", "1")
    first = mpirun(2, "train.py", *argv, "--max_iter", "4", timeout=MPI_TIMEOUT)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p for p in os.listdir(ranks / "models") if p.startswith("state")) == [
        "state_iter_2.pkl", "state_iter_4.pkl"]
    assert sorted(p for p in os.listdir(ranks / "logs") if p.endswith(".png")) == ["sample_iter_2.png",
                                                                                   "sample_iter_4.png"]
    again = mpirun(2, "train.py", *argv, "--max_iter", "6", "--resume", timeout=MPI_TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    train.main(train_argv(weight_files, trained["data"], single / "models", single / "logs", "--batch_size", "2",
                          "--max_iter", "6"))
    assert_same_training(single / "models", ranks / "models", 2, moment_tolerance=2e-5)
    # the losses logged are the global batch's, as one process logs them (the first, from the same parameters)
    first_rows = [np.array((folder / "logs" / "losses.csv").read_text().splitlines()[1].split(","), dtype=float)
                  for folder in (single, ranks)]
    np.testing.assert_allclose(first_rows[1], first_rows[0], rtol=1e-4)
    assert_same_training(single / "models", ranks / "models", 4)
    assert_same_training(single / "models", ranks / "models", 6)
    # one process can take over a 2-rank run: the streams continue where the ranks left them
    taken_over = tmp_path / "taken_over"
    taken_over.mkdir()
    for name in ("decoder_iter_2.pkl", "mcc_module_iter_2.pkl", "state_iter_2.pkl"):
        shutil.copy(ranks / "models" / name, taken_over / name)
    train.main(train_argv(weight_files, trained["data"], taken_over, tmp_path / "logs2",
                          "--batch_size", "2", "--max_iter", "4", "--resume"))
    assert_same_training(single / "models", taken_over, 4)


@needs_mpi
def test_an_error_on_one_rank_ends_the_job_in_seconds(trained, weight_files, tmp_path):
    """Rank 0 alone checks --save_dir. Its exit used to wait in MPI_Finalize for rank 1, which waited for rank 0
    in its first all-reduce: forever."""
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    argv = train_argv(weight_files, trained["data"], blocked / "models", tmp_path / "logs", "--batch_size", "1",
                      "--max_iter", "3")
    start = time.time()
    result = mpirun(2, "train.py", *argv, timeout=MPI_TIMEOUT)
    assert result.returncode != 0 and time.time() - start < 60
    assert f"error: --save_dir {blocked / 'models'}: cannot write there (Not a directory)" in result.stderr


@needs_mpi
def test_ranks_that_resume_different_checkpoints_end_the_job_in_one_line(trained, weight_files, tmp_path):
    """A --save_dir on each node's own disk: rank 1 finds an older checkpoint than rank 0 (only rank 0 writes new
    ones). It would start from other weights, train two iterations more, and then wait for rank 0 forever."""
    node_0, node_1 = tmp_path / "node_0", tmp_path / "node_1"
    shutil.copytree(trained["straight"] / "models", node_0)
    node_1.mkdir()
    for name in ("decoder_iter_2.pkl", "mcc_module_iter_2.pkl", "state_iter_2.pkl"):
        shutil.copy(node_0 / name, node_1 / name)
    commands = [["train.py", *train_argv(weight_files, trained["data"], save_dir, tmp_path / f"logs_{rank}",
                                         "--batch_size", "1", "--max_iter", "6", "--resume")]
                for rank, save_dir in enumerate((node_0, node_1))]
    start = time.time()
    result = mpirun_each(commands, timeout=MPI_TIMEOUT)
    assert result.returncode != 0 and time.time() - start < 60
    assert ("error: --resume: rank 0 found a checkpoint at iteration 4 (4 samples), rank 1 at iteration 2 "
            "(2 samples): every rank must read the same --save_dir (a folder that all nodes share)\n") in result.stderr
    assert "interrupted" not in result.stderr  # rank 1, which mpirun then ended, says nothing
    assert not (node_0 / "state_iter_6.pkl").exists()


@needs_mpi
def test_an_error_that_every_rank_meets_is_one_line(weight_files, tmp_path):
    missing = tmp_path / "no_data"
    argv = train_argv(weight_files, missing, tmp_path / "models", tmp_path / "logs", "--max_iter", "3")
    result = mpirun(2, "train.py", *argv, timeout=MPI_TIMEOUT)
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if "error:" in line] == [f"error: {missing}: no such folder"]


@pytest.mark.parametrize("failure", ["raise cli.UserError('no data')", "raise RuntimeError('a bug')"])
def test_a_failed_rank_of_coupled_ranks_skips_the_exit_that_would_wait_for_the_others(failure):
    """The exit of a rank that fails under mpirun (OMPI_COMM_WORLD_SIZE set) skips Python's clean-up, where
    Jittor's MPI_Finalize would run (an atexit function stands for it); without mpirun the exit is as usual."""
    script = ("import atexit, cli\natexit.register(lambda: print('finalized'))\n"
              f"def main(argv):\n    {failure}\ncli.run(main, coupled_ranks=True)\n")
    for in_mpirun in (True, False):
        env = {k: v for k, v in os.environ.items() if k != "OMPI_COMM_WORLD_SIZE"}
        if in_mpirun:
            env["OMPI_COMM_WORLD_SIZE"] = "2"
        result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1] in ("error: no data", "RuntimeError: a bug"), result.stderr
        assert (result.stdout == "") == in_mpirun, result.stdout


@pytest.mark.parametrize("start", ["cli.run(lambda argv: print('warning: one line', file=sys.stderr))",
                                   "import backend\nprint('warning: one line', file=sys.stderr)"],
                         ids=["cli.run", "backend"])
def test_a_line_on_stderr_is_one_write(start):
    """Python writes stderr unbuffered, a print's text and its newline in two writes: the error lines of two ranks
    of an mpirun job came out as "error: aerror: a" (measured: 3 of 6 runs of 100 lines a rank did). backend's
    lines (Jittor's first compile, the CUDA check) come before `cli.run`, from every rank."""
    script = ("import io, sys, cli\n"
              "class Writes(io.RawIOBase):\n"
              "    writes = []\n"
              "    def writable(self): return True\n"
              "    def write(self, data): self.writes.append(bytes(data)); return len(data)\n"
              "sys.stderr = io.TextIOWrapper(Writes(), write_through=True)  # as Python opens stderr\n"
              f"{start}\n"
              "sys.stderr.flush()\n"
              "print(Writes.writes)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[b'warning: one line\\n']", result.stdout


def rank_processes(marker):
    """{MPI rank: its process ids, the rank's own first}: the processes whose command line holds `marker`, and
    the children that share it (Jittor's compile workers)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as f:
                rank = [item[len(b"OMPI_COMM_WORLD_RANK="):] for item in f.read().split(b"\0")
                        if item.startswith(b"OMPI_COMM_WORLD_RANK=")]
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if rank and marker in command and "mpirun" not in command:
            found[int(pid)] = (int(rank[0]), parent)
    ranks = {}
    for pid, (rank, parent) in sorted(found.items(), key=lambda item: item[1][1] in found):
        ranks.setdefault(rank, []).append(pid)
    return ranks


@needs_mpi
def test_sigusr1_to_one_rank_stops_every_rank_at_one_iteration_with_a_checkpoint(trained, weight_files, tmp_path):
    """mpirun passes SIGUSR1 on to every rank, which may each see it in another iteration: the ranks agree on the
    first iteration in which any saw it (in the all-reduce of the step's losses), there rank 0 writes the
    checkpoint, and all stop. Sent to rank 1 alone here (its own process and its children, Jittor's compile
    workers, which must survive it), the signal must still stop rank 0, which writes."""
    save, logs = tmp_path / "models", tmp_path / "logs"
    argv = train_argv(weight_files, trained["data"], save, logs, "--batch_size", "1", "--max_iter", "10000",
                      "--save_model_interval", "1000")
    job = start_training(argv, mpi_ranks=2)
    wait_for_iterations(job, logs / "losses.csv", 3, timeout=MPI_TIMEOUT)
    for pid in rank_processes(str(save))[1]:  # as Slurm signals every process of a job step
        os.kill(pid, signal.SIGUSR1)
    check_stopped_with_a_checkpoint(job, save, logs)


@needs_mpi
def test_a_rank_killed_mid_run_ends_the_job_and_the_checkpoint_resumes(trained, weight_files, tmp_path, capsys):
    save = tmp_path / "models"
    argv = train_argv(weight_files, trained["data"], save, tmp_path / "logs", "--batch_size", "1",
                      "--max_iter", "10000", "--save_model_interval", "1")
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    job = subprocess.Popen(["mpirun", *root, "--oversubscribe", "-np", "2", sys.executable, "train.py", *argv],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + MPI_TIMEOUT
    while not (save / "state_iter_3.pkl").exists():
        assert time.time() < deadline and job.poll() is None, "no checkpoint within the timeout"
        time.sleep(0.2)
    os.kill(rank_processes(str(save))[1][0], signal.SIGKILL)
    killed = time.time()
    job.communicate(timeout=60)
    assert job.returncode != 0 and time.time() - killed < 30  # seconds, not a hang
    newest = train.complete_checkpoints(str(save))[0]
    iteration = int(train.STATE_PATTERN.search(newest).group(1))
    capsys.readouterr()
    train.main(train_argv(weight_files, trained["data"], save, tmp_path / "logs", "--batch_size", "2",
                          "--max_iter", str(iteration + 1), "--resume"))
    assert f"resuming from {newest}" in capsys.readouterr().err  # the newest complete one is intact
    assert (save / f"state_iter_{iteration + 1}.pkl").exists()
