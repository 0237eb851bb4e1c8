"""The influence engine: a plain library (no Hydra).

capture: per-example gradients of the trainable Linear layers, batched, from hooks.
project: random projections of those gradients (dense, sparse JL, Kronecker per layer).
"""
