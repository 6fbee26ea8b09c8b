"""Run by test_train under `mpirun -np 2`: the training streams as train.py builds them;
each rank writes which images its first batches hold, for the test to compare."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import backend  # noqa: E402,F401
import jittor as jt  # noqa: E402

import train  # noqa: E402

BATCHES = 4


def image_ids(batch):
    """The test's images are uniform, image i of value 20·i: read the ids back from the crops."""
    return [int(round(float(crop.mean()) * 255 / 20)) for crop in batch.numpy()]


def main():
    folder, out_dir = sys.argv[1:3]
    args = train.parse_args(["--content_dir", folder, "--style_dir", folder, "--batch_size", "2",
                             "--n_threads", "0", "--crop_size", "16", "--max_iter", str(BATCHES)])
    content, _ = train.loaders(args, start=0, samples=0)
    batches = [image_ids(batch) for _, batch in zip(range(BATCHES), content)]
    with open(os.path.join(out_dir, f"rank{jt.rank}.json"), "w") as f:
        json.dump({"world": jt.world_size, "batches": batches}, f)


if __name__ == "__main__":
    main()
