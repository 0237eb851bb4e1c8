"""scripts/replicate_record.py: the per-replicate record and its intervals over replicates."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from scipy.stats import t

from ifexp import outputs
from ifexp.report.stats import t_interval

BENCH = "leg_counting"


@pytest.fixture(scope="module")
def record(load_script):
    return load_script("replicate_record")


def write_job(
    sweep: Path, strategy: str, seed: int, pass_rate: float, random_rate: float, fraction: float = 0.25, **extra
) -> None:
    folder = sweep / f"{strategy}-p{fraction}-seed{seed}"
    folder.mkdir(parents=True)
    metrics = {
        outputs.STRATEGY_KEY: strategy,
        "fraction": fraction,
        outputs.REPLICATE_KEY: outputs.replicate_id(seed, seed),
        outputs.pass_key(BENCH): pass_rate,
        outputs.pass_key(BENCH, "random"): random_rate,
        outputs.delta_key(BENCH): pass_rate - random_rate,
        "queries/n_correct": 146,
        "queries/n_incorrect": 110,
        outputs.DIGEST_KEY: f"digest-{strategy}-{seed}",
        outputs.artifact_key(f"eval/pruned/{BENCH}"): f"/cache/eval/{strategy}{seed}",
        outputs.artifact_key(f"eval/random/{BENCH}"): f"/cache/eval/random{seed}",
        **extra,
    }
    (folder / outputs.METRICS).write_text(json.dumps(metrics))


def test_a_sweep_is_added_with_its_provenance_and_a_rerun_that_agrees_changes_nothing(tmp_path, record):
    sweep, path = tmp_path / "next_legs_rule", tmp_path / "record.csv"
    write_job(sweep, "random", 2, 0.695, 0.695)
    write_job(sweep, "combined", 2, 0.655, 0.695, **{"flaw/auroc": 0.878, "flaw/recall": 38 / 51, "n_train_flawed": 51})
    ids = [f"t{i}" for i in range(8)]
    for strategy, removed in {"random": {"t0", "t1", "t2"}, "combined": {"t1", "t2", "t7"}}.items():
        folder = sweep / f"{strategy}-p0.25-seed2"
        outputs.write_selection(folder, strategy, 0.25, 2, {}, ids, [i not in removed for i in ids])
    record.add(sweep, 0.25, "184c5cc", path, BENCH)
    rows = {row["strategy"]: row for row in record.read_record(path)}
    combined = rows["combined"]
    assert combined["delta_vs_random"] == "-0.040" and combined["flawed_removed"] == "38"
    assert combined["shared_with_random"] == "2" and rows["random"]["shared_with_random"] == "3"
    assert combined["replicate"] == "data_seed=2,scorer_seed=2" and combined["code"] == "184c5cc"
    assert combined["config_digest"] == "digest-combined-2" and combined["pruned_eval"] == "combined2"
    assert combined["source"] == "job folder combined-p0.25-seed2"
    before = path.read_text()
    record.add(sweep, 0.25, "184c5cc", path, BENCH)
    assert path.read_text() == before


def test_a_rerun_that_disagrees_or_another_random_model_in_one_replicate_stops(tmp_path, record):
    path = tmp_path / "record.csv"
    first, second, third = (tmp_path / name / "next_legs_rule" for name in ("a", "b", "c"))
    write_job(first, "combined", 2, 0.655, 0.695)
    record.add(first, 0.25, "184c5cc", path, BENCH)
    write_job(second, "combined", 2, 0.660, 0.695)  # the same job, another number
    with pytest.raises(ValueError, match="pass_at_1 0.655 recorded .* vs 0.660 now"):
        record.add(second, 0.25, "184c5cc", path, BENCH)
    other_config = tmp_path / "f" / "next_legs_rule"  # the same numbers from another config: not a rerun
    write_job(other_config, "combined", 2, 0.655, 0.695, **{outputs.DIGEST_KEY: "another-config"})
    with pytest.raises(ValueError, match="another run .* digest-combined-2 recorded .* vs another-config now"):
        record.add(other_config, 0.25, "184c5cc", path, BENCH)
    with pytest.raises(ValueError, match="code 184c5cc recorded .* vs 11ca1db now"):
        record.add(first, 0.25, "11ca1db", path, BENCH)
    write_job(third, "perplexity", 2, 0.685, 0.690)  # replicate 2 with another Random model
    with pytest.raises(
        ValueError, match="random_pass_at_1 of replicate data_seed=2,scorer_seed=2, fraction 0.25 is 0.695"
    ):
        record.add(third, 0.25, "184c5cc", path, BENCH)
    # at another fraction Random keeps another subset: its own model, its own pass@1; θ*'s answers the same
    fourth, fifth = tmp_path / "d" / "next_legs_rule", tmp_path / "e" / "next_legs_rule"
    write_job(fourth, "perplexity", 2, 0.675, 0.670, fraction=0.1)
    record.add(fourth, 0.1, "184c5cc", path, BENCH)
    assert {row["fraction"] for row in record.read_record(path)} == {"0.25", "0.1"}  # as given, never rounded
    write_job(fifth, "combined", 2, 0.675, 0.670, fraction=0.1, **{"queries/n_correct": 150})
    with pytest.raises(ValueError, match="n_queries_correct of replicate data_seed=2,scorer_seed=2 is 150 .* but 146"):
        record.add(fifth, 0.1, "184c5cc", path, BENCH)


def test_a_transcribed_row_takes_the_provenance_of_a_job_that_reproduces_it(tmp_path, record):
    path, sweep = tmp_path / "record.csv", tmp_path / "next_legs_rule"
    copied = dict.fromkeys(record.COLUMNS, "")
    copied.update(
        sweep="next_legs_rule", replicate="data_seed=2,scorer_seed=2", fraction="0.25", strategy="combined",
        pass_at_1="0.655", random_pass_at_1="0.695", delta_vs_random="-0.040", only_strategy="5",
        only_random="13", paired_se="0.021", source="transcribed from docs/results.md",
    )  # fmt: skip
    record.write_record(path, [copied])
    write_job(sweep, "combined", 2, 0.655, 0.695)  # no generations: no paired counts
    record.add(sweep, 0.25, "184c5cc", path, BENCH)
    (row,) = record.read_record(path)
    assert row["source"] == "job folder combined-p0.25-seed2" and row["only_random"] == "13"


def test_code_is_checked_against_the_code_versions_the_jobs_artifacts_record(tmp_path, record):
    from ifexp.cache import MANIFEST
    from ifexp.code_version import tree_digest

    repo = tmp_path / "repo"
    (repo / "ifexp" / "influence").mkdir(parents=True)
    sources = {"ifexp/__init__.py": "", "ifexp/influence/__init__.py": "", "ifexp/influence/scores.py": "X = 1\n"}
    for name, text in sources.items():
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "code"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    digests = {name.removesuffix("/__init__.py").removesuffix(".py").replace("/", "."): tree_digest(repo / name)
               for name in sources}  # fmt: skip
    (repo / "ifexp" / "influence" / "scores.py").write_text("X = 2\n")  # the work tree is not the commit

    def job_with_manifest(name: str, code: dict[str, str]) -> Path:
        artifact = tmp_path / "cache" / name
        artifact.mkdir(parents=True)
        (artifact / MANIFEST).write_text(json.dumps({"key": {"version": {"code": code}}}))
        sweep = tmp_path / name / "next_legs_rule"
        write_job(sweep, "combined", 2, 0.655, 0.695, **{outputs.artifact_key("scores"): str(artifact)})
        return sweep

    path = tmp_path / "record.csv"
    rows, unchecked = record.add(job_with_manifest("ran", digests), 0.25, commit[:7], path, BENCH, repo)
    assert len(rows) == 1 and unchecked == []
    edited = job_with_manifest("edited", {**digests, "ifexp.influence.scores": "0" * 16})
    with pytest.raises(
        ValueError,
        match=f"ifexp.influence.scores 0{{16}} in scores's manifest .* vs {digests['ifexp.influence.scores']} at",
    ):
        record.add(edited, 0.25, commit[:7], path, BENCH, repo)
    added = job_with_manifest("added", {**digests, "ifexp.influence.kfac": "1" * 16})
    with pytest.raises(ValueError, match="ifexp.influence.kfac 1{16} .* vs absent at"):
        record.add(added, 0.25, commit[:7], path, BENCH, repo)
    with pytest.raises(ValueError, match="--code 0000000: no such commit"):
        record.add(added, 0.25, "0000000", path, BENCH, repo)
    gone = tmp_path / "gone" / "next_legs_rule"  # the job's cache is not at hand: recorded, listed unchecked
    write_job(gone, "combined", 2, 0.655, 0.695)
    assert record.add(gone, 0.25, "0000000", tmp_path / "other.csv", BENCH, repo)[1] == ["combined-p0.25-seed2"]


def test_the_interval_over_five_replicates_is_a_student_t_interval_and_says_what_it_covers(record):
    deltas = {"combined": [0.01, 0.02, 0.03, 0.04, 0.06], "perplexity": [0.02, 0.0, 0.01, 0.05, 0.03]}
    rows = [
        {"sweep": "s", "fraction": "0.25", "replicate": outputs.replicate_id(r, r), "strategy": name}
        | {"delta_vs_random": str(d)}
        for name, values in deltas.items()
        for r, d in enumerate(values, start=1)
    ]
    text = "\n".join(record.intervals(rows, versus="perplexity"))

    def by_hand(values):
        m, sd = sum(values) / 5, (sum((v - sum(values) / 5) ** 2 for v in values) / 4) ** 0.5
        half = t.ppf(0.975, 4) * sd / 5**0.5
        return f"{m:+.3f} over 5 | [{m - half:+.3f}, {m + half:+.3f}] |"

    assert "| combined | +0.010 | +0.020 | +0.030 | +0.040 | +0.060 | " + by_hand(deltas["combined"]) in text
    difference = [c - p for c, p in zip(deltas["combined"], deltas["perplexity"], strict=True)]
    assert "| combined | -0.010 | +0.020 | +0.020 | -0.010 | +0.030 | " + by_hand(difference) in text
    assert "95% Student-t interval over the replicates" in text and "fresh draw of the data, θ* and its answers" in text
    assert "| replicate 1 | replicate 2 |" in text
    # answer_check where it removes Random's own subset: Δ 0 in every replicate, no zero-width interval
    same = [{**row, "strategy": "answer_check", "delta_vs_random": "0.000"} for row in rows[:2]]
    assert "| answer_check | +0.000 | +0.000 | +0.000 over 2 | no interval (all 2 equal" in "\n".join(
        record.intervals(same, versus=None)
    )
    # a mean that is 0 up to float noise is +0.000, not a loss of -0.000
    zeros = ["0.06", "-0.02", "-0.04"]
    cancel = [{**row, "strategy": "perplexity", "delta_vs_random": d} for row, d in zip(rows[:3], zeros, strict=True)]
    text = "\n".join(record.intervals(cancel, versus=None))
    assert "| perplexity | +0.060 | -0.020 | -0.040 | +0.000 over 3 |" in text


def test_the_committed_record_reads_and_each_replicate_agrees_with_itself(record):
    rows = record.read_record(record.RECORD)  # docs/headline_replicates.csv
    assert rows and record.merge([], rows, record.RECORD) == rows
    assert all(row["code"] and row["source"] for row in rows)
    assert record.intervals(rows, versus="perplexity")


ROUNDED = 5e-4 + 1e-9  # a cell of 3 decimals is within half its last digit of the value (plus float noise)


def _number(cell: str) -> float:
    return float(cell.strip().replace("−", "-"))


def _tables(text: str, header: str) -> list[tuple[str, list[list[str]]]]:
    """Every Markdown table of docs/results.md whose header line matches `header`: (header, rows of cells)."""
    found, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and re.search(header, line):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip("|").split("|")])
            found.append((line, rows))
    return found


_PAIRED = re.compile(r"(?P<delta>[+−-]\d\.\d{3}) \((?P<only>\d+) / (?P<random>\d+)(?:, (?P<se>\d\.\d{3}))?\)")


def _assert_paired(cell: str, row: dict[str, str], where: str) -> None:
    """'−0.055 (9 / 20, 0.027)' against the record row's Δ, disagreements and paired SE."""
    match = _PAIRED.match(cell)
    assert match, f"{where}: {cell!r} is not 'Δ (only / only, SE)'"
    assert _number(match["delta"]) == pytest.approx(float(row["delta_vs_random"])), where
    assert (match["only"], match["random"]) == (row["only_strategy"], row["only_random"]), where
    if match["se"]:
        assert match["se"] == row["paired_se"], where


def test_results_md_tables_say_what_the_record_holds(record):
    """docs/results.md's headline tables are transcribed by hand: each cell must be the record's."""
    text = (Path(record.RECORD).parents[0] / "results.md").read_text()
    rows = {tuple(r[k] for k in record.KEY): r for r in record.read_record(record.RECORD)}
    checked = 0
    for header, table in _tables(text, r"\| Δ vs Random, replicate \d+ \|"):
        seed = re.search(r"replicate (\d+)", header)[1]
        for label, pass_at_1, paired, auroc, rule, shared in table:
            sweep = "next_legs_rule_length_long" if "length_keep=long" in label else "next_legs_rule"
            row = rows[(sweep, outputs.replicate_id(int(seed), int(seed)), "0.25", re.match(r"\w+", label)[0])]
            where = f"replicate {seed}, {label}"
            assert pass_at_1 == row["pass_at_1"], where
            _assert_paired(paired, row, where)
            assert auroc == row["flaw_auroc"], where
            assert rule.split()[0] == row["flawed_removed"], where
            assert shared.startswith("n/a") or shared == row["shared_with_random"], where
            checked += 1
    for _, table in _tables(text, r"\| replicate, p \(traces removed\) \| Random's pass@1 \| perplexity"):
        for label, random_pass, perplexity, combined, difference in table:
            seed, fraction = re.match(r"(\d+), ([\d.]+)", label).groups()
            key = ("next_legs_rule", outputs.replicate_id(int(seed), int(seed)), fraction)
            for cell, strategy in ((perplexity, "perplexity"), (combined, "combined")):
                row = rows[(*key, strategy)]
                _assert_paired(cell, row, f"{label}, {strategy}")
                assert cell.rsplit("; ", 1)[1] == row["flawed_removed"], f"{label}, {strategy}"
                assert random_pass == row["random_pass_at_1"], label
            delta = float(rows[(*key, "combined")]["delta_vs_random"]) - float(
                rows[(*key, "perplexity")]["delta_vs_random"]
            )
            assert _number(difference) == pytest.approx(delta, abs=ROUNDED), label
            checked += 1
    for header, table in _tables(
        text, r"\| strategy(?:, p)? \| replicate \d+ \| replicate \d+ \|.*\| 95% t-interval over replicates \|"
    ):
        seeds = re.findall(r"replicate (\d+)", header)
        for label, *cells in table:
            per_replicate, mean_cell, interval_cell = cells[:-2], cells[-2], cells[-1]
            strategy = re.match(r"\**(\w+)", label)[1].lower()
            fraction = re.search(r"p = ([\d.]+)", label)
            fraction = fraction[1] if fraction else "0.25"
            deltas = []
            for seed, cell in zip(seeds, per_replicate, strict=True):
                key = ("next_legs_rule", outputs.replicate_id(int(seed), int(seed)), fraction)
                value = float(rows[(*key, strategy)]["delta_vs_random"])
                if "perplexity" in label and strategy != "perplexity":  # the paired difference row
                    value -= float(rows[(*key, "perplexity")]["delta_vs_random"])
                assert _number(cell) == pytest.approx(value, abs=ROUNDED), f"{label}, replicate {seed}"
                deltas.append(value)
            assert _number(mean_cell) == pytest.approx(sum(deltas) / len(deltas), abs=ROUNDED), label
            bounds = t_interval(deltas)
            if bounds is None:
                assert interval_cell.startswith("none"), label
            else:
                low, high = (_number(v) for v in interval_cell.strip("[]").split(","))
                assert (low, high) == pytest.approx(bounds, abs=ROUNDED), label
            checked += 1
    assert checked >= 40  # the tables were found: three replicates' rows, p = 0.1 / 0.5, the intervals
