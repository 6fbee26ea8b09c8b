"""train.py and sampler.py: the sampler's stream, learning, checkpoints, resume, bad input."""
import json
import os
import shutil
import subprocess
import sys

import jittor as jt
import numpy as np
import pytest
import torch
from PIL import Image

import net
import sampler
import torch_mccnet as tm
import train
import weights
from cli import UserError
from conftest import REPO, load_jittor_models

SCRIPT = os.path.join(REPO, "train.py")


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


def test_corrupt_image_is_skipped_with_a_warning(dataset_folder, capfd):
    (dataset_folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    data = sampler.InfiniteImageFolder(str(dataset_folder), batch_size=1, length=10, seed=0)
    samples = [data[i] for i in range(10)]
    assert all(s.shape == (3, 256, 256) for s in samples)
    expected = 0  # each time b.png comes up, and again if its stand-in (the next sample) is b.png
    for i in range(10):
        k = i
        while data.path_at(k).endswith("b.png"):
            expected, k = expected + 1, k + 1
    assert data.skipped == expected >= 2
    assert "skipping unreadable image" in capfd.readouterr().err


@pytest.mark.parametrize("make,expected", [
    (lambda d: d / "nope", "no such folder"),
    (lambda d: d, "holds no image files"),
])
def test_bad_folders(tmp_path, make, expected):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=expected):
        sampler.find_images(str(make(tmp_path)))


def test_hundred_steps_on_one_pair_halve_the_loss(weight_files):
    """The overfitting check: 100 iterations on one fixed 64 × 64 pair."""
    vgg, decoder, mcc = load_jittor_models(weight_files)
    network = net.Net(vgg, decoder, mcc)
    optimizer = net.Adam(list(decoder.parameters()) + list(mcc.parameters()), lr=1e-4)
    rng = np.random.default_rng(0)
    content, style = (jt.array(rng.random((1, 3, 64, 64), dtype=np.float32)) for _ in range(2))
    args = train.parse_args(["--content_dir", ".", "--style_dir", "."])
    totals = []
    for iteration in range(100):
        optimizer.lr = train.learning_rate(args, iteration)
        noise = train.noise_for(0, iteration, content.shape)
        totals.append(train.train_step(network, optimizer, content, style, noise, args)["total"])
    assert totals[-1] <= 0.5 * totals[0], f"total loss {totals[0]:.4g} -> {totals[-1]:.4g}"


def run_train(weight_files, data, save_dir, log_dir, *extra):
    argv = ["--content_dir", str(data), "--style_dir", str(data), "--vgg", weight_files[0],
            "--save_dir", str(save_dir), "--log_dir", str(log_dir), "--batch_size", "1", "--n_threads", "0",
            "--save_model_interval", "2", "--sample_interval", "2", "--log_interval", "1", "--crop_size", "32", *extra]
    train.main(argv)


@pytest.fixture(scope="module")
def trained(weight_files, tmp_path_factory):
    """Four iterations straight, and the same run killed after 2 and resumed to 4."""
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    write_images(data, ["a.jpg", "b.jpg", "c/d.jpg"], size=(300, 200))
    straight, resumed = root / "straight", root / "resumed"
    run_train(weight_files, data, straight / "models", straight / "logs", "--max_iter", "4", "--save_pth")
    (resumed / "models").mkdir(parents=True)
    for name in ("decoder_iter_2.pkl", "mcc_module_iter_2.pkl", "state_iter_2.pkl"):
        shutil.copy(straight / "models" / name, resumed / "models" / name)
    run_train(weight_files, data, resumed / "models", resumed / "logs", "--max_iter", "4", "--resume")
    return dict(root=root, straight=straight, resumed=resumed)


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


def test_resumed_run_equals_the_uninterrupted_one(trained):
    for name in ("decoder_iter_4.pkl", "mcc_module_iter_4.pkl"):
        straight = weights.read_state_dict(str(trained["straight"] / "models" / name))
        resumed = weights.read_state_dict(str(trained["resumed"] / "models" / name))
        for key in straight:
            np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-5, atol=1e-7, err_msg=key)
    rows = (trained["resumed"] / "logs" / "losses.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["3", "4"]


def test_pth_export_loads_in_the_pytorch_original(trained):
    decoder, mcc = tm.make_decoder(), tm.MCC_Module(512)
    decoder.load_state_dict(torch.load(trained["straight"] / "models" / "decoder_iter_4.pth"), strict=True)
    mcc.load_state_dict(torch.load(trained["straight"] / "models" / "mcc_module_iter_4.pth"), strict=True)
    ours = weights.read_state_dict(str(trained["straight"] / "models" / "mcc_module_iter_4.pkl"))
    assert np.array_equal(mcc.MCCN.fc.weight.detach().numpy(), ours["MCCN.fc.weight"])


def test_checkpoint_runs_in_test_video(trained, weight_files, tmp_path):
    models = trained["straight"] / "models"
    image = tmp_path / "photo.png"
    write_images(tmp_path, ["photo.png"], size=(48, 40))
    result = subprocess.run([sys.executable, os.path.join(REPO, "test_video.py"), "--content", str(image),
                             "--style", str(image), "--vgg_path", weight_files[0],
                             "--decoder_path", str(models / "decoder_iter_4.pkl"),
                             "--transform_path", str(models / "mcc_module_iter_4.pkl"),
                             "--output", str(tmp_path / "out"), "--content_size", "0"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out" / "photo_stylized_photo.jpg").size == (48, 40)


def bad_train_cases(tmp_path, weight_files):
    data = tmp_path / "data"
    write_images(data, ["a.jpg"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("x")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file")
    ok = ["--content_dir", str(data), "--style_dir", str(data), "--vgg", weight_files[0],
          "--save_dir", str(tmp_path / "m"), "--log_dir", str(tmp_path / "l"), "--n_threads", "0"]

    def with_(**changes):
        argv = list(ok)
        for flag, value in changes.items():
            if f"--{flag}" in argv:
                argv[argv.index(f"--{flag}") + 1] = value
            else:
                argv += [f"--{flag}"] + ([value] if value is not None else [])
        return argv
    return {
        "missing content": (with_(content_dir=str(tmp_path / "nope")), "no such folder"),
        "no images": (with_(style_dir=str(empty)), "holds no image files"),
        "missing vgg": (with_(vgg=str(tmp_path / "vgg.pth")), "vgg.pth: no such file"),
        "wrong vgg": (with_(vgg=weight_files[1]), "not the VGG encoder weights"),
        "save dir": (with_(save_dir=str(blocked / "m")), "--save_dir"),
        "batch size": (with_(batch_size="0"), "--batch_size 0: must be at least 1"),
        "lr": (with_(lr="0"), "--lr 0.0: must be positive"),
        "resume without checkpoint": (with_(resume=None), "no complete checkpoint"),
    }


@pytest.mark.parametrize("case", ["missing content", "no images", "missing vgg", "wrong vgg", "save dir",
                                  "batch size", "lr", "resume without checkpoint"])
def test_bad_input_is_one_clear_line(tmp_path, weight_files, case):
    argv, expected = bad_train_cases(tmp_path, weight_files)[case]
    result = subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Compiling" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


@pytest.mark.skipif(shutil.which("mpirun") is None,
                    reason="OpenMPI is not installed (apt-get install openmpi-bin libopenmpi-dev); .ci/run installs it")
def test_two_mpi_ranks_hold_identical_parameters(weight_files, tmp_path):
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    result = subprocess.run(["mpirun", *root, "--oversubscribe", "-np", "2", sys.executable,
                             os.path.join(REPO, "tests", "mpi_steps.py"), weight_files[0], str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for step in (0, 1):
        rank0, rank1 = (np.load(tmp_path / f"rank{r}_step{step}.npz") for r in (0, 1))
        assert int(rank0["world"]) == int(rank1["world"]) == 2
        names = [k for k in rank0.files if k != "world"]
        assert len(names) == 28
        for name in names:
            np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=f"step {step} {name}")


@pytest.mark.skipif(shutil.which("mpirun") is None,
                    reason="OpenMPI is not installed (apt-get install openmpi-bin libopenmpi-dev); .ci/run installs it")
def test_mpi_ranks_draw_disjoint_shares_of_the_single_process_stream(tmp_path):
    folder = tmp_path / "uniform"
    folder.mkdir()
    for i in range(1, 8):  # seven images: batches cross epoch boundaries
        Image.fromarray(np.full((20, 24, 3), 20 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    result = subprocess.run(["mpirun", *root, "--oversubscribe", "-np", "2", sys.executable,
                             os.path.join(REPO, "tests", "mpi_sampler.py"), str(folder), str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
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
