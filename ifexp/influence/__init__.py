"""The influence engine: a plain library (no Hydra).

capture: per-example gradients of the trainable Linear layers, batched, from hooks (of training's own loss).
project: random projections of those gradients to k dimensions (exact, dense, sparse JL, Kronecker per layer).
features: the projected gradients of a set of examples, in a memory-mapped store (extracted, written, read).
precondition: the preconditioners H of I(d, q) = phi(q)^T H^-1 phi(d), fitted on the training features.
estimator: an estimator config checked and turned into its projector and preconditioner.
score: I(d, q) and, per training example, s_C / s_I, rank scores and self-influence; scores.csv.
lds: the linear datamodeling score: do influence scores predict the losses of retrained models?
"""
