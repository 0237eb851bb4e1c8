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
