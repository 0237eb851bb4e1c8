"""`ifexp-bench` commands run and write their documented keys (timings are not asserted)."""

import dataclasses
import json

import pytest
import torch
from helpers.data import EASY_TRAINING

from benchmarks.cli import COMMANDS, main, parser
from ifexp.validation import choices


def test_bench_features_writes_json(tiny_model, cache_dir, tmp_path, capsys):
    out = tmp_path / "features.json"
    main(
        [
            "features",
            "--model",
            "tiny_llama",
            "--seq-len",
            "200",
            "--n-examples",
            "6",
            "--less-examples",
            "2",
            "--estimators",
            "grad_dot",
            "logra",
            "--cache-dir",
            str(cache_dir),
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert result["n_examples"] == 6
    per_estimator = ("features_s_per_example", "features_over_train", "bytes_per_example", "less_style_over_features")
    per_estimator += ("less_per_example_projection_over_features", "dense_amortised_over_features")
    for key in per_estimator:
        assert set(result[key]) == {"grad_dot", "logra"}
    assert result["less_style_project_interval"] == 16 and result["less_style_n_examples"] == 6
    assert result["less_per_example_projection_n_examples"] == 2
    assert result["train_step_s_per_example"] > 0 and result["less_style_s_per_example"] > 0
    assert result["bytes_per_example"]["grad_dot"] == 4096 * 4
    assert result["peak_rss_mb"] > 0
    # every ratio: the median over 3 interleaved repetitions, with its min and max
    spread = result["spread"]["less_style_over_features"]["logra"]
    assert len(spread["values"]) == result["repeats"] == 3 and spread["min"] <= spread["median"] <= spread["max"]
    assert result["less_style_over_features"]["logra"] == spread["median"]
    assert result["train_step_s_per_example"] == result["spread"]["train_step_s_per_example"]["median"]
    phases = {"train_step", "features/grad_dot", "features/logra", "less_style", "dense_amortised"}
    assert phases <= set(result["peak_rss_mb_by_phase"])
    assert set(result["features_peak_over_dense_amortised_peak"]) == {"grad_dot", "logra"}


def test_bench_scores_writes_json(tiny_model, cache_dir, tmp_path):
    out = tmp_path / "scores.json"
    args = ["scores", "--model", "tiny_llama", "--seq-len", "200", "--n-train", "16", "--n-queries", "8"]
    # two processes are tested in test_distributed.py; here 0 skips them
    args += ["--rank", "2", "--ranks", "1", "8", "--two-process-n", "0", "--bf16-n-train", "4", "--bf16-n-queries", "2"]
    main([*args, "--cache-dir", str(cache_dir), "--out", str(out)])
    result = json.loads(out.read_text())
    growth = result["cost_growth"]
    assert list(growth["features_s_by_n_train"]) == ["4", "8", "16"]
    assert list(growth["scoring_s_by_n_queries"]) == ["2", "4", "8"]
    assert result["lowrank_curve"]["8"]["rank_corr"] > 0.999  # rank = Q is exact
    assert -1 <= result["lowrank_rank_corr"] <= 1 and result["lowrank_speedup"] > 0
    assert "two_process_max_abs_diff" not in result
    assert result["bf16_feature_cosine_min"] > 0.9


@pytest.mark.parametrize("dataset", ["gsm_symbolic", "leg_counting"])
def test_bench_lds_writes_json(tiny_model, cache_dir, tmp_path, dataset):
    out = tmp_path / "lds.json"
    args = ["lds", "--model", "tiny_llama", "--n-train", "12", "--n-queries", "4", "--n-subsets", "4", "--epochs", "1"]
    args += ["--dataset", dataset] + (["--flaw-fraction", "0.25"] if dataset == "leg_counting" else [])
    args += ["--estimators", "grad_dot", "proj_fisher", "--ks", "64", "--dampings", "1.0"]
    main([*args, "--cache-dir", str(cache_dir), "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["lds"]) == {"grad_dot", "proj_fisher", "exact_grad_dot"}
    assert all(-1 <= value <= 1 for value in result["lds"].values())
    assert set(result["ablations"]["proj_fisher_k"]) == {"64"}
    # leg_counting's training traces: the dataset config's kinds, --flaw-fraction of them (a quarter of 12
    # instead of its half); gsm_symbolic's none
    flaws = (3, ["total_first"]) if dataset == "leg_counting" else (0, [])
    assert (result["dataset"], result["n_flawed_train"], result["flaw_kinds_train"]) == (dataset, *flaws)


@pytest.mark.slow
def test_lds_of_proj_fisher_beats_a_floor_and_grad_dot(tiny_model, cache_dir, tmp_path):
    """Issue 7's acceptance: `ifexp-bench lds --model tiny_llama` with its defaults."""
    out = tmp_path / "lds.json"
    main(["lds", "--model", "tiny_llama", "--cache-dir", str(cache_dir), "--out", str(out)])
    lds = json.loads(out.read_text())["lds"]
    assert lds["proj_fisher"] > 0.1 and lds["proj_fisher"] >= lds["grad_dot"], lds


@pytest.mark.slow
def test_bench_e2e_times_a_whole_sweep(easy_cot, tmp_path):
    out = tmp_path / "e2e.json"
    overrides = [*EASY_TRAINING, f"dataset.path={easy_cot}"]
    main(["e2e", "--sweep", "tiny_all", "--work-dir", str(tmp_path / "work"), "--out", str(out), *overrides])
    result = json.loads(out.read_text())
    assert result["exit_code"] == 0 and result["n_jobs"] == len(choices()["pruning.strategy"])  # tiny_all: every one
    assert {"sft", "features", "scores", "eval"} <= set(result["stages"])
    assert result["wall_s"] > sum(stage["slowest_s"] for stage in result["stages"].values()) * 0.5


def test_bench_flaws_reports_every_strategy_per_kind(easy_cot, tmp_path):
    out = tmp_path / "flaws.json"
    overrides = ["experiment=smoke", *EASY_TRAINING, f"dataset.path={easy_cot}", f"paths.cache_dir={tmp_path}/cache"]
    main(["flaws", "--strategies", "random", "self_influence", "perplexity", "--out", str(out), *overrides])
    result = json.loads(out.read_text())
    assert result["n_flawed"] > 0 and result["theta_star"]["steps"] > 0
    assert set(result["detection"]) == {"random", "self_influence", "perplexity"}
    for found in result["detection"].values():
        assert 0 <= found["auroc"] <= 1 and found["precision"] == pytest.approx(found["recall"])
        assert any(key.startswith("auroc/") for key in found)  # per flaw kind
    assert result["queries"] == {}  # none of these strategies needs theta*'s answers


def test_less_baseline_projects_16_gradients_at_a_time(tiny_model, tiny_model_cfg):
    """As LESS runs it (collect_grads: `project_interval = 16`): each projector call, which
    regenerates the dense matrix from its seed, takes 16 batch-size-1 gradients; each row is the
    projection of its own gradient, as when projected alone."""
    from benchmarks.common import benchmark_rows, padded, theta_star_proxy
    from benchmarks.features import less_style_features
    from ifexp.influence.project import DenseProjector
    from ifexp.models import load_tokenizer

    class Recording(DenseProjector):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.batch_sizes = []

        def project_flat(self, flat):
            self.batch_sizes.append(len(next(iter(flat.values()))))
            return super().project_flat(flat)

    rows = benchmark_rows(tiny_model, tiny_model_cfg, 20)
    model = theta_star_proxy(tiny_model, tiny_model_cfg)
    collate_fn = padded(load_tokenizer(tiny_model).pad_token_id)
    sixteen, one = Recording(64, seed=3), Recording(64, seed=3)
    together = less_style_features(model, rows, collate_fn, sixteen)
    alone = less_style_features(model, rows, collate_fn, one, interval=1)
    assert sixteen.batch_sizes == [16, 4] and one.batch_sizes == [1] * 20
    assert together.shape == (20, 64) and together.norm(dim=1).gt(0).all()
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(together[0], together[1])  # each row its own example's gradient


def test_options_are_the_dataclass_fields():
    """`ifexp-bench` keeps its options: each field of a subcommand's dataclass is one, with the
    field's default, and nothing else is."""
    for name, command in COMMANDS.items():
        fields, missing = dataclasses.fields(command), dataclasses.MISSING
        no_default = [f.name for f in fields if f.default is missing and f.default_factory is missing]
        assert no_default == ["out"], name  # the one required option
        options = vars(parser().parse_args([name, "--out", "o.json"]))
        assert options.pop("command") == name
        assert set(options) == {field.name for field in fields}, name
        assert command(**options) == command(out="o.json"), name  # the parser's defaults are the fields'

    args = vars(parser().parse_args(["lds", "--out", "o.json", "--ks", "--dampings", "0.5", "--method", "lora"]))
    assert args["ks"] == [] and args["dampings"] == [0.5] and args["method"] == "lora" and args["epochs"] == 6
    assert args["estimators"] == ["grad_dot", "grad_cos", "proj_fisher", "logra", "kfac"]
    for wrong in (["lds", "--out", "o.json", "--method", "lora2"], ["features"]):  # bad choice; --out is required
        with pytest.raises(SystemExit):
            parser().parse_args(wrong)
    options = vars(parser().parse_args(["e2e", "--out", "o.json", "--reuse", "dataset.n_train=8"]))
    e2e = COMMANDS[options.pop("command")](**options)
    assert e2e.reuse and e2e.overrides == ["dataset.n_train=8"] and e2e.goal_s == 1800.0
    flaws = vars(parser().parse_args(["flaws", "--out", "o.json", "--strategies", "random", "oracle"]))
    assert flaws["strategies"] == ["random", "oracle"] and flaws["overrides"] == []


def test_bench_memory_measures_each_configuration_in_its_own_process(tiny_model, cache_dir, tmp_path):
    """One length and setting here (each configuration is a process that imports torch); the summary
    over several is checked on numbers below."""
    from benchmarks.memory import summarise

    out = tmp_path / "memory.json"
    args = ["memory", "--model", "tiny_llama", "--lengths", "48", "--checkpointing", "always", "--prompt-tokens", "8"]
    args += ["--overhead-length", "48", "--overhead-repeats", "2"]  # checkpointing's cost, interleaved
    main([*args, "--cache-dir", str(cache_dir), "--out", str(out)])
    result = json.loads(out.read_text())
    for kind in ("train", "features"):
        run = result["runs"]["48"]["always"][kind]
        assert run["peak_rss_mb"] >= run["rss_before_steps_mb"] > 0 and len(run["s_each_step"]) == 2
        assert run["peak_rss_is_since_model_load"]
    assert set(result["summary"]["features_over_train_peak"]) == {"48/always"}
    for kind in ("train", "features"):
        cost = result["checkpointing_overhead"][kind]
        assert len(cost["s_never"]) == len(cost["s_always"]) == 2
        assert 0 < cost["always_over_never"]["min"] <= cost["always_over_never"]["median"]

    def run(peak):
        return {"peak_rss_mb": peak, "step_peak_over_before_mb": peak - 100}

    runs = {str(n): {"always": {"train": run(100 + n / 10), "features": run(100 + n / 8)}} for n in (1000, 3000)}
    summary = summarise(runs)
    assert summary["features_over_train_peak"]["1000/always"] == round(225 / 200, 3)
    assert summary["mb_per_1000_tokens/always/train"] == {"1000-3000": 100.0}
    assert summary["mb_per_1000_tokens/always/features"] == {"1000-3000": 125.0}


def test_bench_scores_scale_mode_runs_the_stage_on_synthetic_stores(tmp_path):
    out = tmp_path / "scale.json"
    args = ["scores", "--scale-n", "500", "1000", "--scale-queries", "20", "--scale-k", "64"]
    main([*args, "--scale-dir", str(tmp_path), "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["peak_rss_mb_by_n"]) == {"500", "1000"}
    run = result["runs"]["1000"]
    assert run["fit_s"] > 0 and run["influence_and_scores_s"] > 0
    assert run["influence_gb"] == round(1000 * 20 * 4 / 1e9, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["scale.json"]  # the stores and the matrix are gone
