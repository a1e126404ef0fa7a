"""Markdown tables shaped like the paper's, and the efficiency-effectiveness plot, from `results.json`.

An empty cell ("–") always carries a footnote mark, and the table's notes say why it is empty (e.g. the teacher is
not evaluated in this budget); the efficiency table records the machine's load during each timing and warns when
other work ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..evaluation.report import (
    EfficiencyRow,
    efficiency_markdown,
    join_efficiency,
    machine_load_note,
    plot_efficiency,
)
from ..evaluation.significance import format_p, paired_test
from ..files import write_text_atomic

ARCHITECTURE_LABELS = {
    "bert_dot": "BERT_DOT",
    "colbert": "ColBERT",
    "prett": "PreTT",
    "tk": "TK",
    "bert_cat": "BERT_CAT (small)",
}
SETTING_LABELS = {"none": "no teacher", "T1": "T1", "T2": "T2", "self": "self (zero-shot MiniLM)"}
EFFICIENT = ("bert_dot", "colbert", "prett", "tk")

# The paper's TREC-DL 2019 nDCG@10 (re-ranking BM25 top-1000; ../shared/PAPER.md), for the student of each
# architecture closest in size to ours (6-layer MiniLM students: DistilBERT; the 3-layer CAT: DistilBERT_CAT).
PAPER_NDCG = {
    "tk": ("TK", {"none": 0.652, "T1": 0.669, "T2": 0.666}),
    "colbert": ("ColBERT", {"none": 0.722, "T1": 0.738, "T2": 0.744}),
    "prett": ("PreTT", {"none": 0.717, "T1": 0.748, "T2": 0.737}),
    "bert_dot": ("DistilBERT_DOT", {"none": 0.670, "T1": 0.704, "T2": 0.712}),
    "bert_cat": ("DistilBERT_CAT", {"none": 0.723, "T1": 0.739, "T2": 0.747}),
}
PAPER_TEACHER_NDCG = 0.730  # BERT-Base_CAT, T1 itself
PAPER_BM25_NDCG = 0.501
# the paper's Table 1 (re-ranking latency on one GPU, passages cached) with the T2 students' TREC-DL 2019 nDCG@10
PAPER_EFFICIENCY = [
    EfficiencyRow("BERT-Base_CAT (T1)", "bert_cat", median_ms=950.0, metrics={"nDCG@10": PAPER_TEACHER_NDCG}),
    EfficiencyRow("PreTT", "prett", median_ms=455.0, metrics={"nDCG@10": 0.737}),
    EfficiencyRow("ColBERT", "colbert", median_ms=28.0, metrics={"nDCG@10": 0.744}),
    EfficiencyRow("DistilBERT_DOT", "bert_dot", median_ms=23.0, metrics={"nDCG@10": 0.712}),
    EfficiencyRow("TK", "tk", median_ms=14.0, metrics={"nDCG@10": 0.666}),
]


FOOTNOTE_MARKS = "¹²³⁴⁵⁶⁷⁸⁹"


class _Notes:
    """The footnotes of one table: each reason why a cell is empty, numbered in the order of first use."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        index = self.reasons.index(reason)
        return FOOTNOTE_MARKS[index] if index < len(FOOTNOTE_MARKS) else f"^{index + 1}"

    def dash(self, reason: str) -> str:
        """An empty cell: "–" with the mark of `reason`."""
        return "–" + self.mark(reason)

    def under(self, table: str) -> str:
        """`table` followed by its notes, one line each ("- ¹ the teacher is not evaluated ...")."""
        if not self.reasons:
            return table
        return table + "\n\n" + "\n".join(f"- {self.mark(reason)} {reason}" for reason in self.reasons)


TEACHER_MEAN = "T2 (teacher mean)"


def _pretrained_teacher_names(budget: dict[str, Any]) -> set[str]:
    """The names of the pretrained teachers (they come first: `teacher_1`, ...)."""
    return {f"teacher_{i + 1}" for i in range(len(budget.get("pretrained_teachers") or []))}


def missing_reason(results: dict[str, Any], name: str, dataset: str) -> str:
    """Why `results` holds no `dataset` number of the model `name`: the note under an empty cell."""
    budget, metrics = results["budget"], results["metrics"]
    eval_sets = budget.get("teacher_eval_sets") or []
    pretrained = _pretrained_teacher_names(budget)
    if (name in pretrained or (name == TEACHER_MEAN and pretrained)) and dataset not in eval_sets:
        where = (
            "in this budget (teacher_eval_sets is empty)"
            if not eval_sets
            else f"on {dataset} in this budget (teacher_eval_sets: {', '.join(eval_sets)})"
        )
        if name == TEACHER_MEAN:
            return (
                "the teachers' mean needs every teacher's scores, and the pretrained teachers are not evaluated "
                + where
            )
        return f"the teacher is not evaluated {where}"
    if name not in metrics:
        return f"{name} is not in results.json: not trained or not evaluated in this run"
    return f"{name} is not evaluated on {dataset} in this run"


def _cell(results: dict[str, Any], name: str, dataset: str, notes: _Notes) -> str:
    metrics = results["metrics"].get(name)
    if not metrics or dataset not in metrics:
        return notes.dash(missing_reason(results, name, dataset))
    m = metrics[dataset]
    return f"{m['nDCG@10']:.3f} / {m['MRR@10']:.3f}"


def students_table(results: dict[str, Any]) -> str:
    """Students x teacher setting: nDCG@10 / MRR@10 on the DL20 dev queries and on SciFact test; the notes under
    the table say why a cell is empty."""
    budget, metrics = results["budget"], results["metrics"]
    notes = _Notes()
    settings = budget["settings"]
    header = (
        "| student | "
        + " | ".join(f"{SETTING_LABELS[s]}: DL20 dev | {SETTING_LABELS[s]}: SciFact" for s in settings)
        + " |"
    )
    lines = [header, "|---|" + "---|---|" * len(settings)]
    for architecture in budget["students"]:
        cells = []
        for setting in settings:
            name = f"{architecture}-{setting}"
            cells += [_cell(results, name, "dl20-dev", notes), _cell(results, name, "scifact-test", notes)]
        lines.append(f"| {ARCHITECTURE_LABELS[architecture]} | " + " | ".join(cells) + " |")
    for name in ["BM25", "MiniLM zero-shot", "teacher_1", "teacher_2", TEACHER_MEAN]:
        if name in metrics:
            dl20, scifact = _cell(results, name, "dl20-dev", notes), _cell(results, name, "scifact-test", notes)
            lines.append(f"| {name} | {dl20} | {scifact} |" + " |" * (2 * len(settings) - 2))
    return notes.under("\n".join(lines))


def loss_table(results: dict[str, Any]) -> str:
    """BERT_DOT with T2: Margin-MSE against the paper's baseline losses."""
    metrics = results["metrics"]
    rows = [("Margin-MSE", "bert_dot-T2")] + [
        (loss, f"bert_dot-T2-{loss}") for loss in results["budget"]["loss_comparison"]
    ]
    rows.append(("no teacher (RankNet)", "bert_dot-none"))
    lines = ["| loss (BERT_DOT, T2) | DL20 dev nDCG@10 / MRR@10 | SciFact nDCG@10 / MRR@10 |", "|---|---|---|"]
    notes = _Notes()
    for label, name in rows:
        if name in metrics:
            dl20, scifact = _cell(results, name, "dl20-dev", notes), _cell(results, name, "scifact-test", notes)
            lines.append(f"| {label} | {dl20} | {scifact} |")
    return notes.under("\n".join(lines))


def _ndcg(metrics: dict[str, Any], name: str, dataset: str = "dl20-dev") -> float | None:
    return metrics[name][dataset]["nDCG@10"] if name in metrics and dataset in metrics[name] else None


def paper_table(results: dict[str, Any]) -> str:
    """Our DL20 dev nDCG@10 next to the paper's TREC-DL 2019 nDCG@10, student x teacher setting."""
    metrics, settings = results["metrics"], results["budget"]["settings"]
    lines = [
        "| student (paper's) | " + " | ".join(f"{SETTING_LABELS[s]}: here / paper" for s in settings) + " |",
        "|---|" + "---|" * len(settings),
    ]

    notes = _Notes()

    def cell(name: str, paper: float | None, setting: str | None = None) -> str:
        ours = _ndcg(metrics, name)
        ours_text = notes.dash(missing_reason(results, name, "dl20-dev")) if ours is None else f"{ours:.3f}"
        if paper is None:
            paper_text = notes.dash(f"the paper has no {SETTING_LABELS.get(setting, setting)} setting")
        else:
            paper_text = f"{paper:.3f}"
        return f"{ours_text} / {paper_text}"

    for architecture in results["budget"]["students"]:
        paper_name, paper = PAPER_NDCG[architecture]
        cells = [cell(f"{architecture}-{s}", paper.get(s), s) for s in settings]
        lines.append(f"| {ARCHITECTURE_LABELS[architecture]} ({paper_name}) | " + " | ".join(cells) + " |")
    teacher = TEACHER_MEAN if TEACHER_MEAN in metrics else "teacher_1"
    fill = " |" * (len(settings) - 1)
    lines.append(f"| teacher: {teacher} (BERT-Base_CAT) | {cell(teacher, PAPER_TEACHER_NDCG)} |{fill}")
    lines.append(f"| BM25 | {cell('BM25', PAPER_BM25_NDCG)} |{fill}")
    return notes.under("\n".join(lines))


def claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's claims, each checked on the DL20 dev nDCG@10 of this run: `holds` is None where a cell is missing."""
    metrics, budget = results["metrics"], results["budget"]
    students = budget["students"]
    checked: list[dict[str, Any]] = []

    def add(claim: str, holds: bool | None, evidence: str) -> None:
        checked.append({"claim": claim, "holds": holds, "evidence": evidence})

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    teacher = "T2 (teacher mean)" if "T2 (teacher mean)" in metrics else "teacher_1"
    teacher_score, bm25 = _ndcg(metrics, teacher), _ndcg(metrics, "BM25")
    add(
        f"the teacher ({teacher}) beats BM25",
        None if teacher_score is None or bm25 is None else teacher_score > bm25,
        f"{fmt(teacher_score)} vs {fmt(bm25)}",
    )
    best = "T2" if "T2" in budget["settings"] else "T1"
    for architecture in students:
        distilled, alone = _ndcg(metrics, f"{architecture}-{best}"), _ndcg(metrics, f"{architecture}-none")
        add(
            f"{ARCHITECTURE_LABELS[architecture]}: {best} Margin-MSE beats no teacher",
            None if distilled is None or alone is None else distilled > alone,
            f"{fmt(distilled)} vs {fmt(alone)}",
        )
    margin = _ndcg(metrics, "bert_dot-T2")
    for loss in budget["loss_comparison"]:
        other = _ndcg(metrics, f"bert_dot-T2-{loss}")
        add(
            f"BERT_DOT with T2: Margin-MSE beats {loss}",
            None if margin is None or other is None else margin > other,
            f"{fmt(margin)} vs {fmt(other)}",
        )
    if "T1" in budget["settings"] and "T2" in budget["settings"]:
        pairs = [(a, _ndcg(metrics, f"{a}-T2"), _ndcg(metrics, f"{a}-T1")) for a in students]
        pairs = [(a, t2, t1) for a, t2, t1 in pairs if t2 is not None and t1 is not None]
        wins = sum(t2 > t1 for _, t2, t1 in pairs)
        add(
            "T2 beats T1 for most students",
            2 * wins > len(pairs) if pairs else None,
            f"{wins} of {len(pairs)}: "
            + ", ".join(f"{ARCHITECTURE_LABELS[a]} {t2:.3f} vs {t1:.3f}" for a, t2, t1 in pairs),
        )
    distilled = [f"{a}-{s}" for a in students if a in EFFICIENT for s in budget["settings"] if s in ("T1", "T2")]
    efficient = [(_ndcg(metrics, name), name) for name in distilled if _ndcg(metrics, name) is not None]
    if efficient and teacher_score is not None:
        score, name = max(efficient)
        add(
            "the best efficient student comes within 0.01 of its teacher",
            score >= teacher_score - 0.01,
            f"{name} {score:.3f} vs {teacher} {teacher_score:.3f}",
        )
    zero_shot = _ndcg(metrics, "MiniLM zero-shot")
    dot = _ndcg(metrics, f"bert_dot-{best}")
    if zero_shot is not None and "bert_dot" in students:
        add(
            f"the MiniLM BERT_DOT student ({best}) beats zero-shot MiniLM",
            None if dot is None else dot > zero_shot,
            f"{fmt(dot)} vs {fmt(zero_shot)}",
        )
    return checked


def comparisons(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The pairs (model, reference) whose per-query differences the report tests."""
    metrics, budget = results["metrics"], results["budget"]
    pairs = [(t, "MiniLM zero-shot") for t in metrics if t.startswith("teacher_") or t == "T2 (teacher mean)"]
    for architecture in budget["students"]:
        for setting in budget["settings"]:
            if setting != "none":
                pairs.append((f"{architecture}-{setting}", f"{architecture}-none"))
        if "T1" in budget["settings"] and "T2" in budget["settings"]:
            pairs.append((f"{architecture}-T2", f"{architecture}-T1"))
        if "self" in budget["settings"]:
            # what the teacher adds beyond training on the same data with no better ranker
            pairs += [(f"{architecture}-{t}", f"{architecture}-self") for t in ("T1", "T2") if t in budget["settings"]]
    pairs += [(f"bert_dot-{s}", "MiniLM zero-shot") for s in budget["settings"]]
    pairs += [(f"{a}-{s}", "BM25") for a in ("prett", "tk", "bert_cat") for s in budget["settings"]]
    pairs += [("bert_dot-T2", f"bert_dot-T2-{loss}") for loss in budget["loss_comparison"]]
    # a model measured on no evaluation set (a teacher whose evaluation was left out) is compared with nothing
    return [(a, b) for a, b in pairs if a in metrics and b in metrics and set(metrics[a]) & set(metrics[b])]


def significance_table(results: dict[str, Any], alpha: float = 0.05) -> str:
    """Each comparison's nDCG@10 difference with its paired t-test p-value, on both evaluation sets."""
    per_query = results.get("per_query_ndcg@10") or {}
    lines = [
        "| comparison (nDCG@10) | DL20 dev: difference, p | SciFact: difference, p |",
        "|---|---|---|",
    ]
    notes = _Notes()
    for a, b in comparisons(results):
        cells = []
        for dataset in ("dl20-dev", "scifact-test"):
            if dataset not in per_query.get(a, {}) or dataset not in per_query.get(b, {}):
                missing = a if dataset not in per_query.get(a, {}) else b
                if dataset in (results["metrics"].get(missing) or {}):
                    reason = f"results.json holds no per-query nDCG@10 of {missing} on {dataset}"
                else:
                    reason = missing_reason(results, missing, dataset)
                cells.append(notes.dash(reason))
                continue
            difference, p, n = paired_test(per_query[a][dataset], per_query[b][dataset])
            verdict = "real" if p < alpha else "noise"
            p_text = format_p(p)
            p_text = p_text if p_text.startswith("<") else f"={p_text}"
            cells.append(f"{difference:+.3f}, p{p_text} ({verdict}, {n} queries)")
        lines.append(f"| {a} vs {b} | " + " | ".join(cells) + " |")
    return notes.under("\n".join(lines))


def claims_table(results: dict[str, Any]) -> str:
    lines = ["| claim (DL20 dev nDCG@10) | holds here | numbers |", "|---|---|---|"]
    notes = _Notes()
    for row in claims(results):
        if row["holds"] is None:
            verdict = notes.dash(
                "not decided: a number the claim compares is missing (–); the notes of the tables above say why"
            )
        else:
            verdict = "yes" if row["holds"] else "**no**"
        lines.append(f"| {row['claim']} | {verdict} | {row['evidence']} |")
    return notes.under("\n".join(lines))


def efficiency_rows(results: dict[str, Any]):
    effectiveness = {}
    students = {
        ARCHITECTURE_LABELS[a]: next(
            (f"{a}-{s}" for s in ("T2", "T1", "none") if f"{a}-{s}" in results["metrics"]), None
        )
        for a in results["budget"]["students"]
    }
    for label, name in students.items():
        if name:
            effectiveness[label] = results["metrics"][name]["dl20-dev"]
    for row in results["latency"]:  # the trained BERT_CAT teacher, "BERT_CAT (teacher_N)"
        teacher = row["name"].removeprefix("BERT_CAT (").removesuffix(")")
        if row["name"].startswith("BERT_CAT (teacher_") and teacher in results["metrics"]:
            effectiveness[row["name"]] = results["metrics"][teacher]["dl20-dev"]
    return join_efficiency(results["latency"], effectiveness)


def _invocations_note(invocations: list[dict[str, Any]]) -> str:
    if len(invocations) < 2:
        return "."
    runs = " + ".join(f"{i['wall_time_s']:.0f} s" for i in invocations)
    return f" ({len(invocations)} runs of the command into this folder: {runs})."


REMEASURE = "remove latency.json from the output folder and run the same command again"


def write_report(results: dict[str, Any], out: Path) -> str:
    """Writes `tables.md` and `efficiency.png`; returns the markdown."""
    rows = efficiency_rows(results)
    sections = [
        f"# Reproduction ({results['budget']['name']} budget)",
        f"Cells: nDCG@10 / MRR@10. DL20 dev: {results['data']['dl20_dev']['num_queries']} TREC-DL 2020 queries "
        f"never trained on, BM25 top-{results['budget']['rerank_top_k']} re-ranked (MRR at grade >= 2). "
        f"SciFact: {results['data']['scifact_test']['num_queries']} test queries, BM25 top-"
        f"{results['budget']['rerank_top_k']} re-ranked.",
        "## Students and teachers",
        students_table(results),
    ]
    if results["budget"]["loss_comparison"] and "bert_dot-T2" in results["metrics"]:
        sections += ["## Loss comparison", loss_table(results)]
    sections += [
        "## Next to the paper",
        "nDCG@10: here on the DL20 dev queries, in the paper on TREC-DL 2019 (BM25 top-1000, students trained on "
        "40M MS MARCO triples). Only the direction of the differences compares.",
        paper_table(results),
        "## The paper's claims, checked on this run",
        claims_table(results),
    ]
    if results.get("teachers"):
        sections += [
            "## Teachers",
            "\n".join(f"- {name}: {source}" for name, source in results["teachers"].items()),
        ]
    if results.get("per_query_ndcg@10"):
        sections += [
            "## Paired significance",
            "Mean per-query nDCG@10 difference and the two-sided paired t-test p-value; a difference with p >= 0.05 "
            "is noise at this number of queries.",
            significance_table(results),
        ]
    sections += [
        "## Efficiency (re-ranking latency per query, DL20 dev)",
        efficiency_markdown(rows),
        *filter(None, [machine_load_note(results["latency"], remeasure=REMEASURE)]),
        f"Device: {results['environment']['device']}; wall time {results['wall_time_s']:.0f} s"
        + _invocations_note(results.get("invocations") or []),
    ]
    markdown = "\n\n".join(sections) + "\n"
    write_text_atomic(out / "tables.md", markdown)
    plot_efficiency(
        rows,
        out / "efficiency.png",
        reference=PAPER_EFFICIENCY,
        titles=(
            f"This run ({results['environment']['device']}, DL20 dev)",
            "The paper (one GPU, TREC-DL 2019, T2 students)",
        ),
    )
    return markdown
