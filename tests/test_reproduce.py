"""`hf-kd reproduce --budget ci`: every stage on the ci cut, every cell filled, and the same numbers on a rerun."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat

import pytest
from transformers import AutoModel

import hf_kd
from hf_kd.cli import main
from hf_kd.data import ScoreDataset
from hf_kd.reproduce import get_budget
from hf_kd.reproduce.data import dl20_split
from hf_kd.reproduce.stages import Reproduction, _self_teacher_name, _teacher_columns, build_backbones


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def unreadable_by_others(folder) -> list[str]:
    """The files and folders under `folder` that group and others cannot read (or, for folders, enter)."""
    wanted = {True: stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH, False: stat.S_IRGRP | stat.S_IROTH}
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if stat.S_IMODE(path.lstat().st_mode) & wanted[path.is_dir()] != wanted[path.is_dir()]
    )


def test_dl20_split_is_fixed_and_disjoint():
    ids = ["1030303", "23849", "42255", "1037496", "47210"]
    dev, train = dl20_split(ids)
    assert dev == ["23849", "47210", "1037496"] and train == ["42255", "1030303"]
    assert not set(dev) & set(train)


def test_bad_budget_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown budget"):
        get_budget("huge")
    with pytest.raises(ValueError, match="unknown student"):
        get_budget("ci", {"students": ["bert_dott"]})
    with pytest.raises(ValueError, match="T2 setting needs at least two teachers"):
        get_budget("ci", {"pretrained_teachers": [], "teacher_layers": [2], "settings": ["none", "T1", "T2"]})
    with pytest.raises(ValueError, match="unknown budget settings"):
        get_budget("ci", {"epochs": 3})
    with pytest.raises(ValueError, match="the self setting learns from zero-shot MiniLM: add minilm"):
        get_budget("short", {"settings": ["none", "self"]})
    with pytest.raises(ValueError, match="student_learning_rates: unknown student 'cat'"):
        get_budget("ci", {"student_learning_rates": {"cat": 1e-4}})
    with pytest.raises(ValueError, match="student_learning_rates: tk must be a positive number, got 0"):
        get_budget("ci", {"student_learning_rates": {"tk": 0}})
    with pytest.raises(ValueError, match="teacher_pairs_per_query: unknown source 'dl19'"):
        get_budget("ci", {"teacher_pairs_per_query": {"dl19": 3}})
    with pytest.raises(ValueError, match="teacher_pairs_per_query: scifact-train must be a positive integer, got 0"):
        get_budget("ci", {"teacher_pairs_per_query": {"scifact-train": 0}})


@pytest.fixture(scope="module")
def ci_reproduction(tmp_path_factory, shared_data):
    """The ci reproduction, run under umask 022; what it wrote to stderr (its progress bars) is kept beside it in
    `stderr.txt`."""
    out = tmp_path_factory.mktemp("reproduce") / "run"
    stderr = io.StringIO()
    with umask(0o022), contextlib.redirect_stderr(stderr):
        code = main(["reproduce", "--budget", "ci", "--data-dir", str(shared_data), "--out", str(out)])
    (out.parent / "stderr.txt").write_text(stderr.getvalue(), encoding="utf-8")
    assert code == 0, stderr.getvalue()[-5000:]
    return out


def test_every_stage_shows_what_it_is_doing(ci_reproduction):
    stderr = (ci_reproduction.parent / "stderr.txt").read_text(encoding="utf-8")
    metrics = json.loads((ci_reproduction / "results.json").read_text())["metrics"]
    # every model the evaluation stage re-ranks with has a bar naming the set and the model, per query: the students
    # (BERT_CAT scores pairs, the others encode the passages first), the trained teacher and the pretrained one
    rerankers = [name for name in metrics if name not in ("BM25", "T2 (teacher mean)")]
    assert {"teacher_1", "teacher_2", "bert_cat-T1", "bert_dot-T2", "tk-none"} <= set(rerankers)
    for name in rerankers:
        for dataset in ("dl20-dev", "scifact-test"):
            assert f"Re-ranking {dataset} with {name}: 100%" in stderr, (name, dataset)
    assert "Encoding the passages of dl20-dev with colbert-T2: 100%" in stderr
    assert "Encoding the passages of dl20-dev with bert_cat-T2" not in stderr  # BERT_CAT caches nothing
    states = re.split(r"[\r\n]", stderr)
    bar = next(state for state in states if state.startswith("Re-ranking dl20-dev with bert_dot-T2: 100%"))
    assert "| 5/5 [" in bar and ("query/s]" in bar or "s/query]" in bar)  # one step per query of the 5 DL20 dev queries
    # the latency stage times each model under a bar, and the teachers score the triples under one
    for name in ("BERT_DOT", "ColBERT", "PreTT", "TK", "BERT_CAT (small)", "BERT_CAT (teacher_2)"):
        assert f"Latency {name}: 100%" in stderr, name
    assert "scoring: 100%" in stderr


def test_every_file_of_the_reproduction_is_readable_by_others_under_umask_022(ci_reproduction):
    assert unreadable_by_others(ci_reproduction) == []
    assert (ci_reproduction / "backbones" / "student-L2" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "students, expected",
    [
        (["bert_dot", "tk"], {"teacher_2": "teacher_2-L2", "student": "student-L2"}),  # no small BERT_CAT backbone
        (["bert_cat"], {"teacher_2": "teacher_2-L2", "small_cat": "small_cat-L1"}),
        (["bert_cat", "colbert"], {"teacher_2": "teacher_2-L2", "student": "student-L2", "small_cat": "small_cat-L1"}),
    ],
)
def test_only_the_backbones_the_budget_trains_on_are_built(tmp_path, students, expected):
    budget = get_budget("ci", {"students": students, "loss_comparison": []})
    run = Reproduction(budget, tmp_path / "run", data=None)
    with umask(0o022):
        build_backbones(run)
    folder = tmp_path / "run" / "backbones"
    assert sorted(os.listdir(folder)) == sorted(expected.values())
    assert run.backbones == {use: str(folder / name) for use, name in expected.items()}
    assert unreadable_by_others(tmp_path / "run") == []  # model.safetensors too, not safetensors' private 0o600
    with umask(0o077):
        build_backbones(Reproduction(budget, tmp_path / "private", data=None))
    weights = tmp_path / "private" / "backbones" / "teacher_2-L2" / "model.safetensors"
    assert oct(stat.S_IMODE(weights.stat().st_mode)) == oct(0o600)  # the umask decides, both ways


def test_the_help_says_what_the_budgets_train(capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["reproduce", "--help"])
    assert exit_code.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "pretrained ones such as all-mpnet-base-v2 (the short budget: one teacher, one BERT_DOT student)" in text
    assert "BERT_CAT cross-encoders trained here with RankNet where the budget names teacher_layers" in text
    assert "trains BERT_CAT teachers" not in text


def test_every_stage_runs_and_every_cell_is_filled(ci_reproduction):
    out = ci_reproduction
    results = json.loads((out / "results.json").read_text())
    metrics = results["metrics"]
    budget = results["budget"]
    expected = [f"{a}-{s}" for a in budget["students"] for s in budget["settings"]]
    expected += [f"bert_dot-T2-{loss}" for loss in budget["loss_comparison"]]
    expected += ["BM25", "teacher_1", "teacher_2", "T2 (teacher mean)"]
    for name in expected:
        for dataset in ("dl20-dev", "scifact-test"):
            assert 0.0 <= metrics[name][dataset]["nDCG@10"] <= 1.0, (name, dataset)
            assert 0.0 <= metrics[name][dataset]["MRR@10"] <= 1.0, (name, dataset)
    # the dev queries are never trained on, and BM25 on them matches its known order of magnitude
    assert results["data"]["dl20_dev"]["num_queries"] == 5
    assert metrics["BM25"]["dl20-dev"]["nDCG@10"] > 0.2
    # the teachers label random pairs of the candidates of the 5 DL20 and 39 SciFact training queries; the
    # no-teacher students train on the judged triples
    counts = results["data"]["teacher_triple_counts"]
    assert counts == {"msmarco-dl20-train-queries": 6 * 5, "msmarco-train-100": 100, "scifact-train": 3 * 39}
    assert ScoreDataset.open(out / "teacher_scores").num_rows == sum(counts.values())
    assert sum(results["data"]["triple_counts"].values()) != sum(counts.values())
    assert {row["name"] for row in results["latency"]} >= {"BERT_DOT", "ColBERT", "PreTT", "TK"}
    assert set(results["environment"]) >= {"torch", "transformers", "hf_kd", "device"}
    tables = (out / "tables.md").read_text()
    assert "## Students and teachers" in tables and "## Loss comparison" in tables and "## Efficiency" in tables
    assert "## The paper's claims, checked on this run" in tables
    # every claim is decided: teacher vs BM25, five students, two losses, T2 vs T1, best student vs teacher
    assert len(results["claims"]) == 10 and all(row["holds"] in (True, False) for row in results["claims"])
    assert (out / "efficiency.png").stat().st_size > 1000
    # checkpoints load with AutoModel and carry the metrics their model card needs
    student = out / "students" / "colbert-T2"
    assert isinstance(AutoModel.from_pretrained(student), hf_kd.ColBERTModel)
    # each student's backbone learning rate: the budget's, or its architecture's own
    rates = {
        name: json.loads((out / "students" / name / "train_summary.json").read_text())["arguments"]["training"][
            "learning_rate"
        ]
        for name in ("bert_cat-T1", "bert_dot-T1")
    }
    assert rates == {"bert_cat-T1": 2e-3, "bert_dot-T1": budget["learning_rate"]} and budget["learning_rate"] != 2e-3
    assert json.loads((student / "metrics.json").read_text())["metrics"]["nDCG@10"] >= 0.0


def test_a_rerun_with_the_same_seed_gives_the_same_numbers(ci_reproduction, tmp_path, shared_data):
    first = json.loads((ci_reproduction / "results.json").read_text())["metrics"]
    out = tmp_path / "again"
    args = ["reproduce", "--budget", "ci", "--data-dir", str(shared_data), "--out", str(out)]
    assert main([*args, "--set", "students=[bert_dot, tk]", "--set", "loss_comparison=[]"]) == 0
    second = json.loads((out / "results.json").read_text())["metrics"]
    assert sorted(os.listdir(out / "backbones")) == ["student-L2", "teacher_2-L2"]  # no BERT_CAT student
    for name in ["teacher_1", "teacher_2", "bert_dot-none", "bert_dot-T1", "bert_dot-T2", "tk-T2"]:
        for dataset in ("dl20-dev", "scifact-test"):
            assert second[name][dataset] == pytest.approx(first[name][dataset], abs=1e-6), (name, dataset)
    # run again into the finished folder: every stage is reused, and the time of both runs is kept
    assert main([*args, "--set", "students=[bert_dot, tk]", "--set", "loss_comparison=[]"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"] == json.loads(json.dumps(second))
    earlier, later = results["invocations"]
    assert later["stage_seconds"]["students"] < earlier["stage_seconds"]["students"]
    assert results["wall_time_s"] == pytest.approx(earlier["wall_time_s"] + later["wall_time_s"], abs=0.011)
    for stage, seconds in results["stage_seconds"].items():
        assert seconds == pytest.approx(earlier["stage_seconds"][stage] + later["stage_seconds"][stage], abs=0.011)
    assert "(2 runs of the command into this folder: " in (out / "tables.md").read_text()


def _results(ndcg: dict[str, float]) -> dict:
    return {
        "budget": {
            "students": ["bert_dot", "tk"],
            "settings": ["none", "T1", "T2"],
            "loss_comparison": ["pointwise_mse"],
        },
        "metrics": {name: {"dl20-dev": {"nDCG@10": v, "MRR@10": v}} for name, v in ndcg.items()},
    }


def test_claims_are_checked_on_the_dev_numbers():
    from hf_kd.reproduce.report import claims, claims_table, paper_table

    results = _results(
        {
            "BM25": 0.45,
            "MiniLM zero-shot": 0.61,
            "T2 (teacher mean)": 0.70,
            "bert_dot-none": 0.60,
            "bert_dot-T1": 0.62,
            "bert_dot-T2": 0.695,
            "bert_dot-T2-pointwise_mse": 0.70,
            "tk-none": 0.50,
            "tk-T1": 0.55,
            "tk-T2": 0.52,
        }
    )
    verdicts = {row["claim"]: row["holds"] for row in claims(results)}
    assert verdicts == {
        "the teacher (T2 (teacher mean)) beats BM25": True,
        "BERT_DOT: T2 Margin-MSE beats no teacher": True,
        "TK: T2 Margin-MSE beats no teacher": True,
        "BERT_DOT with T2: Margin-MSE beats pointwise_mse": False,
        "T2 beats T1 for most students": False,  # 1 of 2 is not most
        "the best efficient student comes within 0.01 of its teacher": True,  # 0.695 >= 0.70 - 0.01
        "the MiniLM BERT_DOT student (T2) beats zero-shot MiniLM": True,
    }
    assert "| T2 beats T1 for most students | **no** | 1 of 2: BERT_DOT 0.695 vs 0.620, TK 0.520 vs 0.550 |" in (
        claims_table(results)
    )
    assert "| BERT_DOT (DistilBERT_DOT) | 0.600 / 0.670 | 0.620 / 0.704 | 0.695 / 0.712 |" in paper_table(results)


def test_a_missing_cell_leaves_its_claim_open():
    from hf_kd.reproduce.report import claims

    verdicts = {row["claim"]: row["holds"] for row in claims(_results({"BM25": 0.45, "bert_dot-none": 0.6}))}
    assert verdicts["BERT_DOT: T2 Margin-MSE beats no teacher"] is None
    assert verdicts["the teacher (teacher_1) beats BM25"] is None


def test_report_only_rewrites_the_tables_from_results(ci_reproduction, capsys):
    (ci_reproduction / "tables.md").unlink()
    assert main(["reproduce", "--report-only", "--out", str(ci_reproduction)]) == 0
    tables = (ci_reproduction / "tables.md").read_text()
    assert "## The paper's claims, checked on this run" in tables and "## Next to the paper" in tables
    assert "## The paper's claims" in capsys.readouterr().out


def test_report_only_without_results_names_the_missing_file(tmp_path, capsys):
    assert main(["reproduce", "--report-only", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(
        f"hf-kd reproduce: error: {tmp_path / 'results.json'}: no results to report"
    )
    with pytest.raises(FileNotFoundError, match="results.json"):
        main(["reproduce", "--report-only", "--out", str(tmp_path), "--debug"])


def test_significance_table_says_which_differences_are_noise():
    from hf_kd.reproduce.report import significance_table

    base = {f"q{i}": 0.5 for i in range(20)}
    better = {q: v + 0.1 + 0.001 * i for i, (q, v) in enumerate(base.items())}
    noisy = {q: v + (0.1 if i % 2 else -0.1) for i, (q, v) in enumerate(base.items())}
    results = _results({"MiniLM zero-shot": 0.5, "bert_dot-none": 0.5, "bert_dot-T1": 0.6})
    results["budget"].update(students=["bert_dot"], settings=["none", "T1"], loss_comparison=[])
    results["per_query_ndcg@10"] = {
        "MiniLM zero-shot": {"dl20-dev": base},
        "bert_dot-none": {"dl20-dev": noisy},
        "bert_dot-T1": {"dl20-dev": better},
    }
    table = significance_table(results)
    assert "| bert_dot-T1 vs bert_dot-none | -0.100" not in table
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert ", p<0.001 (real, 20 queries)" in rows["bert_dot-T1 vs MiniLM zero-shot"]
    assert "+0.000, p=1.000 (noise, 20 queries)" in rows["bert_dot-none vs MiniLM zero-shot"]
    # a teacher whose evaluation was left out (no evaluation set) gets no row of dashes
    results["metrics"]["teacher_1"] = {}
    assert "teacher_1" not in significance_table(results)


def test_budgets_name_their_teachers():
    assert get_budget("short").pretrained_teachers == ["mpnet"]
    assert get_budget("cpu").num_teachers == 2
    with pytest.raises(ValueError, match="unknown pretrained teacher 'bert'"):
        get_budget("short", {"pretrained_teachers": ["bert"]})


def test_cpu_losses_trains_the_loss_comparison_on_the_cpu_budgets_data(tmp_path):
    cpu, losses = get_budget("cpu"), get_budget("cpu-losses")
    what_differs = {"name", "students", "settings", "loss_comparison"}
    assert {k: v for k, v in cpu.to_dict().items() if k not in what_differs} == {
        k: v for k, v in losses.to_dict().items() if k not in what_differs
    }
    cpu_runs = Reproduction(cpu, tmp_path / "cpu", data=None).student_runs()
    loss_runs = Reproduction(losses, tmp_path / "losses", data=None).student_runs()
    assert [name for name, *_ in loss_runs] == [
        "bert_dot-T2",
        "bert_dot-T2-pointwise_mse",
        "bert_dot-T2-weighted_ranknet",
    ]
    assert loss_runs[0] in cpu_runs and not {name for name, *_ in cpu_runs} & {name for name, *_ in loss_runs[1:]}


def test_the_self_distillation_control_learns_from_zero_shot_minilm(ci_reproduction):
    """`self`: Margin-MSE from zero-shot MiniLM's columns, wherever MiniLM sits among the teachers."""
    assert _self_teacher_name(get_budget("cpu")) == "teacher_2"  # after all-mpnet-base-v2
    assert _self_teacher_name(get_budget("ci")) == "teacher_1" and _self_teacher_name(get_budget("short")) is None
    scores = ci_reproduction / "teacher_scores"
    columns = _teacher_columns(scores, ["teacher_1", "teacher_2"], "teacher_2")
    assert columns["self"] == ScoreDataset.score_columns("teacher_2") != columns["T1"]
    assert "self" not in _teacher_columns(scores, ["teacher_1", "teacher_2"])
    assert _teacher_columns(scores, ["teacher_1"], "teacher_1")["self"] == ScoreDataset.score_columns()
    with pytest.raises(ValueError, match="no scores of the self-distillation teacher teacher_3"):
        _teacher_columns(scores, ["teacher_1", "teacher_2"], "teacher_3")
    # in the ci budget zero-shot MiniLM is also T1: the two students learn from the same columns, to the last digit
    results = json.loads((ci_reproduction / "results.json").read_text())
    assert results["metrics"]["bert_dot-self"] == results["metrics"]["bert_dot-T1"]
    summaries = {
        name: json.loads((ci_reproduction / "students" / name / "train_summary.json").read_text())
        for name in ("bert_dot-self", "bert_dot-T2")
    }
    assert summaries["bert_dot-self"]["arguments"]["hf_kd"]["loss"] == "margin_mse"
    assert summaries["bert_dot-self"]["arguments"]["hf_kd"]["pos_score_column"] == columns["T1"][0]
    # the report tests what a teacher adds beyond the control
    table = (ci_reproduction / "tables.md").read_text()
    assert "| bert_dot-T1 vs bert_dot-self |" in table and "| bert_dot-T2 vs bert_dot-self |" in table
    assert "self (zero-shot MiniLM): DL20 dev" in table


def _short_like_results() -> dict:
    """The results of a budget like `short`: one pretrained teacher that is not evaluated (teacher_eval_sets empty),
    BERT_DOT without a teacher and from T1, and the self-distillation control."""
    results = _results({"BM25": 0.45, "MiniLM zero-shot": 0.61, "bert_dot-none": 0.60, "bert_dot-T1": 0.62})
    results["budget"].update(
        students=["bert_dot"],
        settings=["none", "T1"],
        loss_comparison=[],
        pretrained_teachers=["mpnet"],
        teacher_layers=[],
        teacher_eval_sets=[],
    )
    for name, metrics in results["metrics"].items():
        if name != "bert_dot-T1":  # evaluated on DL20 dev only
            metrics["scifact-test"] = {"nDCG@10": 0.5, "MRR@10": 0.4}
    results["metrics"]["teacher_1"] = {}  # measured on no evaluation set
    return results


def test_an_empty_cell_says_why_it_is_empty():
    from hf_kd.reproduce.report import claims_table, paper_table, significance_table, students_table

    results = _short_like_results()
    reason = "the teacher is not evaluated in this budget (teacher_eval_sets is empty)"
    table = students_table(results)
    assert "| BERT_DOT | 0.600 / 0.600 | 0.500 / 0.400 | 0.620 / 0.620 | –¹ |" in table
    assert "| teacher_1 | –² | –² |" in table
    assert table.endswith(f"- ¹ bert_dot-T1 is not evaluated on scifact-test in this run\n- ² {reason}")
    assert table.count("–") == 3  # no dash without its mark
    paper = paper_table(results)
    assert "| teacher: teacher_1 (BERT-Base_CAT) | –¹ / 0.730 |" in paper and paper.endswith(f"- ¹ {reason}")
    claims = claims_table(results)
    assert "| the teacher (teacher_1) beats BM25 | –¹ | – vs 0.450 |" in claims
    assert "- ¹ not decided: a number the claim compares is missing (–); the notes of the tables above say why" in (
        claims
    )
    # a setting the paper did not run, and a model not in the results at all
    results["budget"]["settings"] = ["none", "T1", "self"]
    paper = paper_table(results)
    assert "| BERT_DOT (DistilBERT_DOT) | 0.600 / 0.670 | 0.620 / 0.704 | –¹ / –² |" in paper
    assert "- ¹ bert_dot-self is not in results.json: not trained or not evaluated in this run" in paper
    assert "- ² the paper has no self (zero-shot MiniLM) setting" in paper
    # a comparison on a set one side lacks
    results["per_query_ndcg@10"] = {
        "bert_dot-T1": {"dl20-dev": {"q1": 0.5, "q2": 0.8, "q3": 0.6}},
        "bert_dot-none": {"dl20-dev": {"q1": 0.4, "q2": 0.6, "q3": 0.6}, "scifact-test": {"q4": 0.2}},
    }
    significance = significance_table(results)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in significance.splitlines()[2:] if line.startswith("|")}
    assert rows["bert_dot-T1 vs bert_dot-none"].startswith("| bert_dot-T1 vs bert_dot-none | +0.100, p=")
    assert rows["bert_dot-T1 vs bert_dot-none"].endswith(" | –¹ |")
    assert "- ¹ bert_dot-T1 is not evaluated on scifact-test in this run" in significance
    assert rows["bert_dot-none vs MiniLM zero-shot"] == "| bert_dot-none vs MiniLM zero-shot | –² | –³ |"
    assert "- ² results.json holds no per-query nDCG@10 of MiniLM zero-shot on dl20-dev" in significance


def test_the_teachers_mean_says_why_it_is_missing_on_a_set_the_teachers_skip():
    from hf_kd.reproduce.report import missing_reason

    results = _short_like_results()
    results["budget"].update(pretrained_teachers=["mpnet", "minilm"], teacher_eval_sets=["dl20-dev"])
    results["metrics"]["T2 (teacher mean)"] = {"dl20-dev": {"nDCG@10": 0.7, "MRR@10": 0.6}}
    assert missing_reason(results, "T2 (teacher mean)", "scifact-test") == (
        "the teachers' mean needs every teacher's scores, and the pretrained teachers are not evaluated on "
        "scifact-test in this budget (teacher_eval_sets: dl20-dev)"
    )
    assert missing_reason(results, "teacher_2", "scifact-test") == (
        "the teacher is not evaluated on scifact-test in this budget (teacher_eval_sets: dl20-dev)"
    )


def test_the_latency_table_records_the_load_and_warns_when_the_machine_was_busy(ci_reproduction, tmp_path):
    from hf_kd.reproduce.report import write_report

    results = json.loads((ci_reproduction / "results.json").read_text())
    for row in results["latency"]:  # the ci run recorded the load around each timing
        assert len(row["load_average_before"]) == len(row["load_average_after"]) == 3 and row["cpu_threads"] >= 1
    tables = (ci_reproduction / "tables.md").read_text()
    assert "Machine load (1-minute load average before / after each timing" in tables
    for row in results["latency"]:
        row.update(cpu_threads=2, load_average_before=[1.0, 0.5, 0.2], load_average_after=[1.9, 0.8, 0.3])
    idle = write_report(results, tmp_path)
    assert "Warning" not in idle and "BERT_DOT 1.00 / 1.90 on 2 threads" in idle
    busy = results["latency"][1]["name"]
    results["latency"][1].update(load_average_after=[3.9, 2.5, 1.0])  # two threads used, four busy
    tables = write_report(results, tmp_path)
    assert (tmp_path / "tables.md").read_text() == tables
    efficiency = tables.split("## Efficiency")[1]
    assert (
        f"**Warning: timed on a busy machine.** The load average exceeded the CPU threads used while {busy} was "
        "timed: other work ran at the same time, so its latency is too high. On an idle machine, remove "
        "latency.json from the output folder and run the same command again."
    ) in efficiency
    assert f"{busy} 1.00 / 3.90 on 2 threads" in efficiency
