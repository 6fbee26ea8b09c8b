"""Run by test_backend under `mpirun -np 2` (argument: a folder for each rank's report): Jittor's
start-up as on a GPU machine, where each rank first checks Jittor's CUDA build in a child
process and then starts MPI with Jittor's import. The GPU is pretended and the build checked
is the CPU one (so the check fails and the CPU is used): what matters is that the child stays
out of the MPI job and the rank can still join it."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cuda_setup  # noqa: E402


def main():
    cuda_setup.gpu_present = lambda: True
    cuda_setup.cuda_build_environment = lambda nvcc: ({"nvcc_path": "", "cache_name": "cpu"}, None)
    import backend  # Jittor's start-up, as a script's first import
    import jittor as jt
    total = jt.array([float(jt.rank + 1)]).mpi_all_reduce("add").item()
    with open(os.path.join(sys.argv[1], f"rank{jt.rank}.txt"), "w") as f:  # ranks' prints would interleave
        f.write(f"rank {jt.rank} of {jt.world_size}: sum {total}; CUDA: {backend.cuda_problem}")


if __name__ == "__main__":
    main()
