"""Training: one step of Algorithm 1, its CUDA-graph replay, the epoch loop and its schedule."""

# Before any torch, here where every way a run trains passes (the foreground `srat run`, the
# detached worker, the Slurm job): torch's C init imports numpy itself and swallows whatever
# that import raises, so a Ctrl-C (KeyboardInterrupt) or a stop signal (RunInterrupted)
# landing in those ~40 ms was lost and the run trained on to "finished". Imported here, in
# Python, it propagates. Not in `srat_engine` itself: configs and waiting workers stay
# numpy-free (pyproject's import contracts).
import numpy  # noqa: F401
