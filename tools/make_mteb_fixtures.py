"""Make the retrieval-metric fixture that ``vlzoo eval``'s metrics are checked against, computed by MTEB itself.

It writes ``tests/fixtures/mteb/retrieval_metrics.json``: a table of small, deterministic retrieval cases, each a
``(qrels, run)`` pair in MTEB's dict form::

    qrels: {query_id: {doc_id: int relevance}}     run: {query_id: {doc_id: float score}}

run through MTEB's own code exactly as ``AbsTaskRetrieval._evaluate_subset`` does after the search step:

1. ``mteb.abstasks.retrieval._filter_queries_without_positives(qrels, queries)`` (it drops queries whose qrels dict
   is *empty*; a query whose qrels hold only relevance-0 entries is kept);
2. ``RetrievalEvaluator.evaluate(filtered_qrels, run, k_values=(1, 3, 5, 10, 20, 100, 1000),
   ignore_identical_ids=False, skip_first_result=False)`` (the ``AbsTaskRetrieval`` defaults; the ViDoRe tasks do not
   override them), which is ``calculate_retrieval_scores`` (pytrec_eval + MTEB's own MRR and nAUC);
3. ``make_score_dict(...)`` with no task-specific scores: the dict MTEB stores per (split, subset) before it adds
   ``main_score``.

Per case the JSON holds: ``name``, ``description``, ``qrels``, ``run``, ``queries`` (the query ids handed to the
filter), ``queries_kept`` and ``filtered_qrels`` (after step 1), ``scores`` (MTEB's full score dict; nothing dropped,
NaN nAUC values written as ``null``), ``mrr_per_query`` (MTEB's ``mrr()`` lists, the per-query values its MRR
averages), and ``pytrec_eval_per_query`` (pytrec_eval's raw per-query output for the measure set MTEB uses:
``map_cut``, ``ndcg_cut``, ``recall``, ``P``, ``success`` at the k values). A case MTEB cannot score has
``scores: null`` and ``mteb_error`` (the exception MTEB raises). Top level: ``versions`` (mteb, pytrec_eval, numpy,
scikit-learn, python), ``k_values`` and the ``cases`` list.

How to run it (from the repository root), in a separate virtualenv that is NOT vlzoo's: mteb must never become a
vlzoo dependency::

    python3.11 -m venv /work/venv-mteb
    /work/venv-mteb/bin/pip install torch==2.13.0          # the CPU build FIRST; any other torch pulls a CUDA build
    /work/venv-mteb/bin/pip install mteb==2.26.24 pytrec-eval-terrier==0.5.11 torch==2.13.0
    /work/venv-mteb/bin/python tools/make_mteb_fixtures.py

(mteb 2.26.24 accepts torch 2.13.0 as is.) The fixture in the repository was made with Python 3.11, mteb 2.26.24,
pytrec-eval-terrier 0.5.11, numpy 2.4.6, scikit-learn 1.9.1. Nothing is downloaded: the cases are generated here
from fixed seeds, and rerunning the script rewrites a byte-identical file.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytrec_eval  # noqa: E402
from datasets import Dataset  # noqa: E402
from mteb._evaluators import RetrievalEvaluator  # noqa: E402
from mteb._evaluators.retrieval_metrics import make_score_dict, mrr  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval, _filter_queries_without_positives  # noqa: E402
from mteb.timing import TimingStack  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "mteb" / "retrieval_metrics.json"

SEED = 20250607
K_VALUES = tuple(AbsTaskRetrieval.k_values)
assert K_VALUES == (1, 3, 5, 10, 20, 100, 1000), K_VALUES


# --------------------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------------------


def _rng(case_index: int) -> random.Random:
    # One generator per case, so editing one case never changes another.
    return random.Random(SEED * 1000 + case_index)


def case_ties(rng: random.Random) -> dict:
    """Many exact ties; tied ids whose string order differs from their numeric order."""
    docs = [f"corpus-test-{i}" for i in range(1, 26)]
    levels = [0.875, 0.75, 0.5, 0.25]  # exact binary fractions: equal in float32 and float64
    qrels: dict = {}
    run: dict = {}
    for q in range(1, 9):
        qid = f"query-test-{q}"
        scores = {d: rng.choice(levels) for d in docs}
        # Force the classic tie: 9 vs 10 (and 2 vs 20, 1 vs 10/11) at the top score.
        if q in (1, 2):
            scores["corpus-test-9"] = scores["corpus-test-10"] = 1.0
        if q in (3, 4):
            scores["corpus-test-2"] = scores["corpus-test-20"] = 1.0
            scores["corpus-test-19"] = 1.0
        if q in (5, 6):
            for d in ("corpus-test-1", "corpus-test-10", "corpus-test-11", "corpus-test-12"):
                scores[d] = 1.0
        run[qid] = scores
        if q == 1:
            qrels[qid] = {"corpus-test-10": 1}  # numerically later, string-smaller: ranked 2nd of the tie
        elif q == 2:
            qrels[qid] = {"corpus-test-9": 1}  # string-greater: ranked 1st of the tie
        elif q == 3:
            qrels[qid] = {"corpus-test-2": 1, "corpus-test-19": 1}
        elif q == 4:
            qrels[qid] = {"corpus-test-20": 1}
        elif q == 5:
            qrels[qid] = {"corpus-test-1": 1}
        elif q == 6:
            qrels[qid] = {"corpus-test-11": 1, "corpus-test-10": 1}
        else:
            qrels[qid] = {d: 1 for d in rng.sample(docs, rng.randint(1, 3))}
    # One query where every doc has the same score: the ranking is pure id order.
    qid = "query-test-10"
    run[qid] = {d: 0.5 for d in docs}
    qrels[qid] = {"corpus-test-3": 1, "corpus-test-25": 1}
    return {
        "name": "ties_string_vs_numeric_ids",
        "description": (
            "Scores from 4 exact binary levels, so nearly every rank is tied; forced ties between corpus-test-9 and "
            "corpus-test-10, -2/-19/-20, -1/-10/-11/-12; query-test-10 has one score for all docs. pytrec_eval (and "
            "MTEB's MRR) break ties by doc id as a string, descending: corpus-test-9 ranks above corpus-test-10."
        ),
        "qrels": qrels,
        "run": run,
    }


def case_graded(rng: random.Random) -> dict:
    """Graded relevance 0..3, including judged non-relevant (0) docs ranked high."""
    docs = [f"page_{i:03d}" for i in range(40)]
    qrels: dict = {}
    run: dict = {}
    for q in range(10):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(3, 8))
        grades = {d: rng.choice([0, 1, 2, 3]) for d in judged}
        if all(g == 0 for g in grades.values()):
            grades[judged[0]] = rng.choice([1, 2, 3])
        qrels[qid] = grades
        run[qid] = {d: round(rng.uniform(-1.0, 1.0), 4) for d in docs}
        # Push a few judged docs (whatever their grade) to the top, in random order.
        for d in judged[:3]:
            run[qid][d] = round(rng.uniform(1.0, 2.0), 4)
    return {
        "name": "graded_qrels",
        "description": (
            "Relevance grades 0, 1, 2, 3; grade-0 docs are judged but not relevant. pytrec_eval's ndcg_cut uses the "
            "grade itself as the gain (linear, not 2^g - 1); recall/P/map/success and MTEB's MRR count grade >= 1 as "
            "relevant."
        ),
        "qrels": qrels,
        "run": run,
    }


def case_overlapping_ids(rng: random.Random) -> dict:
    """Query ids equal to doc ids; MTEB's ignore_identical_ids is False for retrieval (ViDoRe included)."""
    docs = [str(i) for i in range(1, 16)]
    qrels: dict = {}
    run: dict = {}
    for qid in ("3", "7", "12", "15"):
        scores = {d: round(rng.uniform(0.0, 1.0), 3) for d in docs}
        scores[qid] = 1.5  # the doc with the query's own id is ranked first
        run[qid] = scores
    qrels["3"] = {"3": 1, "5": 1}  # the self-id doc is relevant
    qrels["7"] = {"8": 1}  # the self-id doc is not relevant and takes rank 1
    qrels["12"] = {"12": 2, "1": 1}
    qrels["15"] = {"2": 1, "4": 1, "6": 1}
    return {
        "name": "overlapping_query_and_corpus_ids",
        "description": (
            "Each query id is also a doc id and that doc is scored highest. With ignore_identical_ids=False (the "
            "AbsTaskRetrieval default) nothing is removed: the self-id doc stays at rank 1."
        ),
        "qrels": qrels,
        "run": run,
    }


def case_multi_relevant(rng: random.Random) -> dict:
    """Queries with several relevant pages (1..6), binary relevance."""
    docs = [f"corpus-test-{i}" for i in range(60)]
    qrels: dict = {}
    run: dict = {}
    for q in range(12):
        qid = f"query-test-{q}"
        n_rel = 1 + q % 6
        qrels[qid] = {d: 1 for d in rng.sample(docs, n_rel)}
        run[qid] = {d: round(rng.gauss(0.0, 1.0), 5) for d in docs}
        for d in qrels[qid]:
            run[qid][d] = round(run[qid][d] + rng.uniform(0.0, 2.0), 5)
    return {
        "name": "several_relevant_pages",
        "description": (
            "1 to 6 relevant pages per query. recall@k divides by the number of relevant docs (not min(k, R)); "
            "map_cut@k divides by R too; accuracy = Recall@1 (so 1/R, not 1, when the top hit is one of R relevant)."
        ),
        "qrels": qrels,
        "run": run,
    }


def case_missing_positives(rng: random.Random) -> dict:
    """Zero-only qrels, empty qrels, and qrels for a query absent from the run."""
    docs = [f"d{i}" for i in range(20)]
    qrels: dict = {
        "q_ok_1": {"d1": 1, "d7": 0},
        "q_ok_2": {"d3": 1},
        "q_ok_3": {"d19": 1, "d11": 1},
        "q_zero_only": {"d2": 0, "d4": 0},  # judged, nothing relevant: KEPT by the filter, scores 0 everywhere
        "q_empty": {},  # no judgements: DROPPED by the filter (and so never searched)
        "q_not_in_run": {"d5": 1},  # kept by the filter, but absent from the run (like v2's other-language queries)
    }
    run: dict = {}
    for qid in ("q_ok_1", "q_ok_2", "q_ok_3", "q_zero_only"):
        run[qid] = {d: round(rng.uniform(0.0, 1.0), 4) for d in docs}
    run["q_zero_only"]["d2"] = 5.0
    return {
        "name": "queries_without_positives",
        "description": (
            "q_zero_only has only relevance-0 qrels: _filter_queries_without_positives keeps it (it only drops "
            "queries whose qrels dict is empty), pytrec_eval scores it 0 on every measure and it counts in every "
            "denominator. q_empty has an empty qrels dict: dropped from qrels and queries, so the search never "
            "returns it. q_not_in_run is in qrels but not in the run: pytrec_eval only scores queries present in "
            "the run, so it is left out of every average (this is how ViDoRe v2's language subsets work: every "
            "subset carries the qrels of all languages, the run holds only that subset's queries)."
        ),
        "qrels": qrels,
        "run": run,
    }


def case_run_query_not_in_qrels(rng: random.Random) -> dict:
    """A run query with no qrels entry at all: MTEB raises (its MRR indexes qrels[query_id])."""
    docs = [f"d{i}" for i in range(8)]
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1, "d4": 1}}
    run = {qid: {d: round(rng.uniform(0.0, 1.0), 4) for d in docs} for qid in ("q1", "q2", "q3", "q_unjudged")}
    return {
        "name": "run_query_absent_from_qrels",
        "description": (
            "q_unjudged is in the run but has no qrels entry. pytrec_eval silently skips it, but MTEB's mrr() does "
            "qrels[query_id] and raises KeyError, so calculate_retrieval_scores fails. In a real MTEB run this "
            "cannot happen: the loader and _filter_queries_without_positives keep only queries with qrels, and the "
            "search only returns those queries."
        ),
        "qrels": qrels,
        "run": run,
        "queries": ["q1", "q2", "q3"],  # the query ids MTEB would have searched; q_unjudged is what a buggy run adds
    }


def case_deep_run(rng: random.Random) -> dict:
    """120 docs per query, relevant docs placed deep so @20, @100 and @1000 differ."""
    docs = [f"corpus-test-{i}" for i in range(120)]
    qrels: dict = {}
    run: dict = {}
    target_ranks = [[1], [15, 60], [25, 99, 101], [100, 110, 120], [50], [3, 30, 118]]
    for q, ranks in enumerate(target_ranks):
        qid = f"query-test-{q}"
        order = docs[:]
        rng.shuffle(order)
        # Strictly decreasing distinct scores: the rank of order[i] is i + 1.
        run[qid] = {d: round(1.0 - i / 200.0, 6) for i, d in enumerate(order)}
        qrels[qid] = {order[r - 1]: 1 for r in ranks}
        # Also judge a non-retrieved doc as relevant for one query (it lowers recall at every k).
        if q == 5:
            qrels[qid]["corpus-test-999"] = 1
    return {
        "name": "deep_run_over_100_docs",
        "description": (
            "Each query ranks all 120 docs with distinct scores; relevant docs at ranks 1..120 (101, 110, 118, 120 "
            "beyond @100), and query-test-5 has a relevant doc that is not in the run at all."
        ),
        "qrels": qrels,
        "run": run,
    }


def case_int_like_and_string_ids(rng: random.Random) -> dict:
    """Integer-like ids ("0", "9", "10", "007", "7") next to string ids, with ties across them."""
    docs = ["0", "1", "2", "7", "007", "9", "10", "11", "100", "abc", "Doc_B", "doc_a", "-1", "1e3", "x10"]
    qrels: dict = {}
    run: dict = {}
    query_ids = ["0", "1", "10", "9", "query", "Q-2"]
    for qid in query_ids:
        run[qid] = {d: rng.choice([0.5, 0.25, 0.125]) for d in docs}
    run["0"].update({"9": 1.0, "10": 1.0, "100": 1.0})
    qrels["0"] = {"10": 1, "100": 1}
    run["1"].update({"7": 1.0, "007": 1.0})
    qrels["1"] = {"007": 1}
    run["10"].update({"abc": 1.0, "Doc_B": 1.0, "doc_a": 1.0})
    qrels["10"] = {"Doc_B": 1}
    run["9"].update({"-1": 1.0, "1e3": 1.0, "x10": 1.0, "11": 1.0})
    qrels["9"] = {"-1": 1, "11": 2}
    qrels["query"] = {d: 1 for d in rng.sample(docs, 2)}
    qrels["Q-2"] = {d: rng.choice([1, 2]) for d in rng.sample(docs, 3)}
    return {
        "name": "integer_like_and_string_ids",
        "description": (
            "Ids are always strings in MTEB. Ties among '9', '10', '100' (string order: '9' > '100' > '10'), '7' vs "
            "'007', 'abc' vs 'Doc_B' vs 'doc_a' (byte order: 'doc_a' > 'abc' > 'Doc_B'), '-1' vs '11' vs '1e3' vs "
            "'x10'."
        ),
        "qrels": qrels,
        "run": run,
    }


def case_empty_ranking(rng: random.Random) -> dict:
    """A query that is in the run with no docs at all."""
    docs = [f"p{i}" for i in range(10)]
    qrels = {"a": {"p1": 1}, "b": {"p2": 1, "p3": 1}, "c": {"p4": 1}}
    run = {qid: {d: round(rng.uniform(0.0, 1.0), 4) for d in docs} for qid in ("a", "b")}
    run["c"] = {}
    return {
        "name": "query_with_empty_ranking",
        "description": (
            "Query c is in the run with an empty ranking: pytrec_eval still scores it (0 everywhere) and it counts "
            "in every denominator; MTEB's MRR gives it 0; its nAUC confidence scores are all 0."
        ),
        "qrels": qrels,
        "run": run,
    }


def case_random_baseline(rng: random.Random) -> dict:
    """A plain random case: 20 queries, 80 docs, distinct scores, 1-3 relevant docs, grades 1-2."""
    docs = [f"corpus-test-{i}" for i in range(80)]
    qrels: dict = {}
    run: dict = {}
    for q in range(20):
        qid = f"query-test-{q}"
        qrels[qid] = {d: rng.choice([1, 1, 2]) for d in rng.sample(docs, rng.randint(1, 3))}
        run[qid] = {d: round(rng.uniform(-1.0, 1.0), 7) for d in docs}
        for d in qrels[qid]:
            run[qid][d] = round(run[qid][d] + rng.uniform(0.0, 1.0), 7)
    return {
        "name": "random_baseline",
        "description": "20 queries x 80 docs, (almost surely) no ties, 1-3 relevant docs with grades 1-2.",
        "qrels": qrels,
        "run": run,
    }


CASES = [
    case_ties,
    case_graded,
    case_overlapping_ids,
    case_multi_relevant,
    case_missing_positives,
    case_run_query_not_in_qrels,
    case_deep_run,
    case_int_like_and_string_ids,
    case_empty_ranking,
    case_random_baseline,
]

# The case whose per-query pytrec_eval output the lead asked for explicitly; every case carries it anyway.
PER_QUERY_CASE = "graded_qrels"


# --------------------------------------------------------------------------------------------------------------
# Running MTEB
# --------------------------------------------------------------------------------------------------------------


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (dict, list)):  # numpy scalar
        return _nan_to_none(value.item())
    return value


def _pytrec_measures(k_values) -> set[str]:
    ks = ",".join(str(k) for k in k_values)
    return {f"map_cut.{ks}", f"ndcg_cut.{ks}", f"recall.{ks}", f"P.{ks}", f"success.{ks}"}


def run_case(case: dict) -> dict:
    qrels = case["qrels"]
    run = case["run"]
    query_ids = case.get("queries")
    if query_ids is None:
        # Every query the task knows about: those with qrels plus those in the run, in first-seen order.
        query_ids = list(dict.fromkeys([*qrels, *run]))
    queries = Dataset.from_dict({"id": list(query_ids), "text": [f"text of {q}" for q in query_ids]})

    # 1. exactly what _evaluate_subset does first (it works on copies here: the filter builds new objects)
    filtered_qrels, kept_queries = _filter_queries_without_positives(
        {q: dict(d) for q, d in qrels.items()}, queries
    )

    evaluator = RetrievalEvaluator(
        corpus=None,
        queries=kept_queries,
        task_metadata=None,
        hf_split="test",
        hf_subset="default",
        top_k=max(K_VALUES),
        timer=TimingStack(),
    )
    run_copy = {q: dict(d) for q, d in run.items()}
    out = {
        "name": case["name"],
        "description": case["description"],
        "qrels": qrels,
        "run": run,
        "queries": list(query_ids),
        "queries_kept": list(kept_queries["id"]),
        "filtered_qrels": filtered_qrels,
    }
    try:
        # 2. AbsTaskRetrieval defaults: ignore_identical_ids=False, skip_first_result=False
        (_all_scores, ndcg, _map, recall, precision, naucs, avg_mrr, naucs_mrr, hit_rate) = evaluator.evaluate(
            filtered_qrels, run_copy, K_VALUES, ignore_identical_ids=False, skip_first_result=False
        )
    except Exception as exc:  # noqa: BLE001 - the error itself is the expected output
        out["scores"] = None
        out["mteb_error"] = f"{type(exc).__name__}: {exc}"
    else:
        # 3. the score dict MTEB stores (no task-specific scores, no previous-results meta for a fresh run)
        out["scores"] = _nan_to_none(
            make_score_dict(
                ndcg=ndcg,
                _map=_map,
                recall=recall,
                precision=precision,
                mrr=avg_mrr,
                naucs=naucs,
                naucs_mrr=naucs_mrr,
                hit_rate=hit_rate,
                task_scores={},
                previous_results_model_meta=None,
            )
        )
        out["mrr_per_query"] = {
            "query_order": list(run_copy),
            **{k: list(v) for k, v in mrr(filtered_qrels, run_copy, K_VALUES).items()},
        }
    # pytrec_eval's raw per-query numbers for the measure set MTEB asks for (queries in the run that have qrels)
    evaluator_pt = pytrec_eval.RelevanceEvaluator(filtered_qrels, _pytrec_measures(K_VALUES))
    per_query = evaluator_pt.evaluate({q: dict(d) for q, d in run.items()})
    out["pytrec_eval_per_query"] = {q: dict(sorted(m.items())) for q, m in per_query.items()}
    return out


def _dumps(value, indent: int = 0) -> str:
    """JSON with one line per leaf container (a dict or list of scalars), so the file stays small and diffable."""

    def scalar(v) -> bool:
        return not isinstance(v, (dict, list))

    def one(v) -> str:
        return json.dumps(v, ensure_ascii=False, allow_nan=False)

    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict):
        if all(scalar(v) for v in value.values()):
            return one(value)
        items = [f"{inner}{one(k)}: {_dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if all(scalar(v) for v in value):
            return one(value)
        items = [f"{inner}{_dumps(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return one(value)


def main() -> int:
    cases = []
    names = set()
    for index, make in enumerate(CASES):
        case = make(_rng(index))
        assert case["name"] not in names, case["name"]
        names.add(case["name"])
        cases.append(run_case(case))
    assert PER_QUERY_CASE in names

    doc = {
        "description": (
            "Retrieval metrics computed by MTEB's own code (AbsTaskRetrieval._evaluate_subset after search: "
            "_filter_queries_without_positives, RetrievalEvaluator.evaluate(..., ignore_identical_ids=False), "
            "make_score_dict). Made by tools/make_mteb_fixtures.py; do not edit by hand."
        ),
        "versions": {
            "mteb": version("mteb"),
            "pytrec_eval": version("pytrec-eval-terrier"),
            "numpy": version("numpy"),
            "scikit-learn": version("scikit-learn"),
            "python": platform.python_version(),
        },
        "k_values": list(K_VALUES),
        "per_query_case": PER_QUERY_CASE,
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = _dumps(doc) + "\n"
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)} ({len(cases)} cases, {len(text)} bytes)")
    for c in cases:
        s = c["scores"]
        summary = c.get("mteb_error") or f"ndcg@5={s['ndcg_at_5']} ndcg@10={s['ndcg_at_10']} mrr@10={s['mrr_at_10']}"
        print(f"  {c['name']}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
