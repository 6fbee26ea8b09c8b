"""Run by test_train under `mpirun -np 2`: two training steps on different data per rank;
each rank writes its parameters after every step for the test to compare."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import backend  # noqa: E402,F401
import jittor as jt  # noqa: E402
import numpy as np  # noqa: E402

import train  # noqa: E402


def main():
    vgg_path, out_dir = sys.argv[1:3]
    network, decoder, mcc_module, optimizer = train.build(vgg_path, lr=1e-4)
    rng = np.random.default_rng(jt.rank)  # each rank its own batch, as the sampler gives it
    for step in range(2):
        content, style = (jt.array(rng.random((1, 3, 32, 32), dtype=np.float32)) for _ in range(2))
        noise = train.noise_for(0, step, 2 * step + jt.rank, content.shape)
        train.train_step(network, optimizer, content, style, noise, 3.0, 10.0)
        params = {f"p{i}": p.numpy() for i, p in enumerate(list(decoder.parameters()) + list(mcc_module.parameters()))}
        np.savez(os.path.join(out_dir, f"rank{jt.rank}_step{step}.npz"), world=jt.world_size, **params)


if __name__ == "__main__":
    main()
