"""`ifexp-bench features` runs and writes the documented keys (timings are not asserted)."""

import json

from ifexp.bench import main


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
    for key in ("features_s_per_example", "features_over_train", "less_style_over_features", "bytes_per_example"):
        assert set(result[key]) == {"grad_dot", "logra"}
    assert result["train_step_s_per_example"] > 0 and result["less_style_s_per_example"] > 0
    assert result["bytes_per_example"]["grad_dot"] == 4096 * 4
    assert result["peak_rss_mb"] > 0


def test_bench_scores_writes_json(tiny_model, cache_dir, tmp_path):
    out = tmp_path / "scores.json"
    args = ["scores", "--model", "tiny_llama", "--seq-len", "200", "--n-train", "16", "--n-queries", "8"]
    args += ["--rank", "2", "--ranks", "1", "8", "--two-process-n", "6", "--bf16-n-train", "4", "--bf16-n-queries", "2"]
    main([*args, "--cache-dir", str(cache_dir), "--out", str(out)])
    result = json.loads(out.read_text())
    growth = result["cost_growth"]
    assert list(growth["features_s_by_n_train"]) == ["4", "8", "16"]
    assert list(growth["scoring_s_by_n_queries"]) == ["2", "4", "8"]
    assert result["lowrank_curve"]["8"]["rank_corr"] > 0.999  # rank = Q is exact
    assert -1 <= result["lowrank_rank_corr"] <= 1 and result["lowrank_speedup"] > 0
    # 2 gloo processes reproduce this process's features
    assert result["two_process_max_abs_diff"] <= 1e-4 * result["two_process_max_abs_feature"]
    assert result["bf16_feature_cosine_min"] > 0.9
