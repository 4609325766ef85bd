"""Training: one step of Algorithm 1, its CUDA-graph replay, the epoch loop and its schedule."""
