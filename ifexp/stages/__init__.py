"""The cached stages of one job, one module each (DESIGN.md "Stages and the artifact cache").

    dataset -> base_model -> sft (theta*) -> eval[val] (queries: Q_C, Q_I) -> features(D), features(Q)
      -> scores | self_influence | perplexity | theta_loss | embedding
      -> sft (the kept examples; Random's) -> eval (benchmarks)

Each module declares its `Stage` (ifexp.cache) and owns, in one place, the stage's key (the config
slice it reads and its inputs' digests), its build and how its artifact is read. A stage's code
version is the static import closure of its module (ifexp.code_version), so this package's
__init__ imports nothing: importing one stage must not make every other stage part of its code.
ifexp.pipeline chains them.
"""
