"""`ifexp-bench`: the performance and quality benchmarks, one module per subcommand (README.md here).

They sit beside the `ifexp` package, not in it: they may compose jobs through Hydra
(`ifexp.cli.compose_job`), which the library itself never imports.
"""
