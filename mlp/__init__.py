"""A two-layer MLP for MNIST in functional JAX: data, model, training, sweeps.

The library holds all logic; `main.py` only parses flags and dispatches here.
Nothing in this package reads flags or global state.
"""
