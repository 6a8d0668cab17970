"""Sweeps under the budget: ``loraclf sweep`` searches recipe keys with Optuna and trains only what fits.

The method, step by step:

1. **Space** (:mod:`loraclf.sweep_space`): SPACE.yaml maps recipe keys to ``int``, ``float`` or ``choice``
   distributions, all checked against the recipe; a space whose cheapest corner is over the budget is refused.
2. **Budget before training.** Optuna's TPE sampler suggests a point; it becomes a recipe whose exact trainable
   count comes from the meta-device plan (milliseconds, cached). A point over the budget is never trained and gets
   no run folder: its trial ends in Optuna's state PRUNED with the user attributes ``over_budget=True`` and
   ``trainable``. Pruned without intermediate values, TPE ranks it below every trained trial and steers away from
   that region; a FAIL state would be ignored by TPE (and retried by retry callbacks).
3. **Each trial is an ordinary run.** ``prepare()`` and ``train()`` write ``DIR/trials/trial-NNNN`` as
   ``loraclf train`` does. Unless the recipe sets ``train.eval_every``, a trial evaluates ``EVALS_PER_TRIAL`` times,
   evenly spaced; evaluation k is reported to Optuna as step k (trials with other batch sizes then compare at the
   same share of their training) and the pruner (median by default, or successive halving) may stop the trial
   there through ``train()``'s ``on_evaluate`` hook. A stopped run finishes like an early-stopped one: its best
   weights are evaluated, ``metrics.json`` and ``report.html`` are written, and the trial keeps those metrics as
   user attributes. A finished trial's value is its final metric (the kept weights, scored as ``loraclf evaluate``
   scores them). A point that fails on its own (a :class:`~loraclf.utils.errors.PointError` such as out of memory
   or a length beyond the position table, or a diverged loss) is a FAIL trial whose reason is the leaderboard's
   note, and the sweep goes on; a mistake every trial would meet (a file, the recipe) stops it.
4. **Storage and workers** (:mod:`loraclf.sweep_study`). The study lives in ``DIR/study.db`` (SQLite) unless
   ``--storage URL`` names another database (PostgreSQL or MySQL, for workers on several machines). Running the
   command again loads the study and adds N trials; stopping a worker loses at most its running trial.
5. **Results.** ``DIR/leaderboard.csv`` (best first: finished trials by the metric, then pruned ones, then the
   rest), the same table on stdout, ``DIR/report.html`` (:mod:`loraclf.sweep_report`), and with ``--top K`` the K
   best finished trials retrained once per seed through ``loraclf compare`` (mean ± standard deviation).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from loraclf.config import Recipe, from_dict, to_dict
from loraclf.modeling.methods import validate_recipe
from loraclf.sweep.pruning import Reporter, total_steps
from loraclf.sweep.space import Dist, Planner, check_some_point_fits, metric_columns, parse_space, recipe_with
from loraclf.sweep.study import fail_lost_trials, make_pruner, open_storage, open_study, shown_url, worker
from loraclf.sweep.timing import StudyClock
from loraclf.utils.durations import parse_duration
from loraclf.utils.errors import PointError, UserError, say
from loraclf.utils.files import atomic_open, atomic_write_text

EVALS_PER_TRIAL = 4


class TrialFailed(Exception):
    """A trial that cannot run (an invalid combination of values, a :class:`PointError` such as out of memory or a
    length beyond the position table) or diverged: recorded as FAIL with its reason, the sweep goes on."""


# --- one trial -----------------------------------------------------------------------------------------------------


class Objective:
    """One trial: suggest, plan, and train when the point fits the budget."""

    def __init__(
        self,
        base: Recipe,
        space: list[Dist],
        planner: Planner,
        args,
        out: Path,
        clock: StudyClock | None = None,
    ):
        self.base, self.space, self.planner, self.args, self.out = base, space, planner, args, out
        self.metric = base.train.metric
        self.clock = clock

    def __call__(self, trial) -> float:
        trial.set_user_attr("worker", worker())
        try:
            return self._run(trial)
        except PointError as exc:  # this configuration's own problem (memory, a length): the sweep goes on
            trial.set_user_attr("note", str(exc))
            raise TrialFailed(str(exc)) from None
        except UserError as exc:  # a problem of the inputs: the sweep stops with it, the trial records it
            trial.set_user_attr("note", str(exc))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("note", "interrupted (Ctrl-C)")
            raise

    def _run(self, trial) -> float:
        import optuna
        import torch

        from loraclf.training.loop import train
        from loraclf.training.prepare import prepare
        from loraclf.training.state import Diverged

        values = {d.key: d.suggest(trial) for d in self.space}
        try:
            recipe = recipe_with(self.base, values, source=f"trial {trial.number}")
        except UserError as exc:
            trial.set_user_attr("note", f"invalid combination: {exc}")
            raise TrialFailed(str(exc)) from None
        the_plan = self.planner(recipe)
        # The configuration itself (before the sweep's evaluation schedule below): what --top retrains.
        for key, value in (("trainable", the_plan.trainable), ("method", recipe.adapter.method)):
            trial.set_user_attr(key, value)
        trial.set_user_attr("recipe", to_dict(recipe))
        if recipe.budget is not None and the_plan.trainable > recipe.budget:
            trial.set_user_attr("over_budget", True)
            trial.set_user_attr("note", f"over budget by {the_plan.trainable - recipe.budget:,}; not trained")
            raise optuna.TrialPruned("over budget")
        run = self.out / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_folder", str(run.resolve()))
        started = time.monotonic()
        if self.clock is not None:  # the study's deadline: this trial gets its share (sweep/timing.py)
            recipe.train.time_budget = self.clock.trial_budget(recipe.train.time_budget)
            trial.set_user_attr("time_budget", recipe.train.time_budget)
        try:
            p, t = prepare(recipe, self.args.train, self.args.eval), recipe.train
            total = None if t.time_budget is not None else total_steps(p)  # a budget plans its own steps
            if total is not None and t.eval_every is None:
                t.eval_every = max(1, math.ceil(total / EVALS_PER_TRIAL))
            reporter = Reporter(trial, self.metric, total, total and math.ceil(total / t.eval_every), run)
            m = train(p, run, on_evaluate=reporter, started=started)
        except Diverged as exc:  # a learning rate too high for this point: a failed trial, not a failed sweep
            trial.set_user_attr("note", str(exc))
            raise TrialFailed(str(exc)) from None
        except (torch.OutOfMemoryError, MemoryError) as exc:  # outside the training step's own memory hint
            raise PointError(f"out of memory ({type(exc).__name__}: {str(exc)[:120]})") from None
        for key in ("accuracy", "macro_f1", "loss", "train_seconds", "steps"):
            trial.set_user_attr(key, m.get(key))
        if reporter.pruned_note:
            trial.set_user_attr("note", reporter.pruned_note)
            raise optuna.TrialPruned(reporter.pruned_note)
        return float(m[self.metric])


# --- leaderboard -----------------------------------------------------------------------------------------------------


def searched_keys(study, keys: list[str]) -> list[str]:
    """The space's keys, then any that earlier runs of the study searched and the current space no longer has."""
    seen = {k for t in study.get_trials(deepcopy=False) for k in t.params}
    return keys + sorted(seen - set(keys))


def leaderboard(study, keys: list[str], metric: str) -> list[dict]:
    """One row per trial, best first: finished trials by the metric, then pruned ones with a metric, then the rest
    (over budget, failed, running) by trial number."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        state = "over_budget" if a.get("over_budget") else t.state.name.lower()
        note = a.get("note") or ("its worker stopped without finishing it" if state == "fail" else "")
        row = {"trial": t.number, "state": state, "method": a.get("method", "")}
        row.update({k: t.params.get(k, "") for k in keys})
        row["trainable"] = a.get("trainable", "")
        row.update({m: a.get(m, "") if a.get(m) is not None else "" for m in metric_columns(metric)})
        row.update(train_seconds=a.get("train_seconds", ""), run_folder=a.get("run_folder", ""), note=note)
        rows.append(row)
    sign = 1 if metric == "loss" else -1

    def order(r):
        scored = isinstance(r[metric], (int, float)) and r["state"] in ("complete", "pruned")
        return (
            (0 if r["state"] == "complete" else 1) if scored else 2,
            sign * r[metric] if scored else 0,
            r["trial"],
        )

    return sorted(rows, key=order)


def write_leaderboard(rows: list[dict], path: Path, columns: list[str]) -> None:
    # A temporary name of this writer's own: two workers finishing trials at once each rename a whole file.
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def columns_of(keys: list[str], metric: str) -> list[str]:
    fixed = ["trainable", *metric_columns(metric), "train_seconds", "run_folder", "note"]
    return ["trial", "state", "method", *keys, *fixed]


def format_leaderboard(rows: list[dict], keys: list[str], metric: str) -> str:
    def cell(v, pct=False):
        if v == "" or v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.2%}" if pct else f"{v:.4g}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    mcols = metric_columns(metric)
    widths = {k: min(max([len(k)] + [len(cell(r[k])) for r in rows]), 22) for k in keys}
    head = f"{'trial':>5}  {'state':<11} " + "".join(f"{k[:22]:>{widths[k]}} " for k in keys)
    head += f"{'trainable':>10} " + "".join(f"{m:>9} " for m in mcols) + f"{'train s':>8}"
    lines = [head]
    for r in rows:
        line = f"{r['trial']:>5}  {r['state']:<11} " + "".join(
            f"{cell(r[k])[:22]:>{widths[k]}} " for k in keys
        )
        line += f"{cell(r['trainable']):>10} " + "".join(f"{cell(r[m], m != 'loss'):>9} " for m in mcols)
        lines.append(line + f"{cell(r['train_seconds']):>8}")
    return "\n".join(lines)


# --- the command -----------------------------------------------------------------------------------------------------


@dataclass
class Sweep:
    """An opened sweep: the recipe every trial starts from, the space, the study, the folder it writes to."""

    base: Recipe
    space: list[Dist]
    planner: Planner
    study: object
    out: Path
    where: str  # the storage as shown to users

    @property
    def metric(self) -> str:
        return self.base.train.metric

    def results(self) -> tuple[list[dict], list[str]]:
        """The leaderboard rows, best first (also written to DIR/leaderboard.csv), and the searched keys."""
        keys = searched_keys(self.study, [d.key for d in self.space])
        rows = leaderboard(self.study, keys, self.metric)
        write_leaderboard(rows, self.out / "leaderboard.csv", columns_of(keys, self.metric))
        return rows, keys


def open_sweep(args: argparse.Namespace, pruner=None) -> Sweep:
    """Check every input, then open (or resume) the study; nothing is created before the checks pass.

    Raises:
        UserError: A mistake in the flags, recipe, space, data files or storage, or another study in DIR.
    """
    _check_args(args)
    base = _base_recipe(args)
    space = parse_space(args.space, base)
    from loraclf.data.tables import load_texts, load_train_texts  # pandas: after the quick checks

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: '{out}' is a file; give a folder for the sweep")
    name = args.study or out.resolve().name
    where = shown_url(args.storage) if args.storage else "DIR/study.db"
    _check_record(out, name, where)
    _, label_map = load_train_texts(list(args.train), base.data, "--train")
    for flag, path in (("--eval", args.eval), ("--test", args.test)):
        if path:
            load_texts(path, base.data, flag, label_map=label_map)
    planner = Planner(len(label_map))
    check_some_point_fits(base, space, planner, str(args.space))
    if not args.storage:
        out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(args.storage or f"sqlite:///{(out / 'study.db').resolve()}")
    out.mkdir(parents=True, exist_ok=True)
    pruner = pruner or make_pruner(args.pruner)
    study = open_study(storage, name, base.train.metric, base.train.seed, bool(args.storage), pruner)
    _write_record(out, name, where, base.train.metric, space)
    return Sweep(base, space, planner, study, out, where)


def run_sweep(args: argparse.Namespace, pruner=None) -> int:
    """``loraclf sweep``: open (or resume) the study, add N trials, write the leaderboard, --top and the report.

    Args:
        args: The parsed command line (see :mod:`loraclf.sweep_cli`).
        pruner: An Optuna pruner to use instead of ``--pruner`` (how the Python API passes any pruner).

    Returns:
        The exit status (0).

    Raises:
        UserError: Any input mistake, before a study is created or a folder written.
    """
    started = time.monotonic()  # a --time-budget counts the whole study from here
    args.time_budget = parse_duration(getattr(args, "time_budget", None), "--time-budget")
    sweep = open_sweep(args, pruner)
    study = sweep.study
    lost = fail_lost_trials(study)
    if lost:
        say(f"sweep: marked {lost} trial(s) of stopped workers on this host as failed")
    n = len(study.get_trials(deepcopy=False))
    say(f"sweep: study '{study.study_name}' ({sweep.where}) has {n} trials; adding {args.trials}")

    clock = None if args.time_budget is None else StudyClock(args.time_budget, args.trials, started)

    def after_trial(study, trial) -> None:
        sweep.results()
        say(_trial_line(trial, sweep.metric))
        if clock is not None and not clock.room_for_another(study):
            study.stop()

    objective = Objective(sweep.base, sweep.space, sweep.planner, args, sweep.out, clock)
    if clock is not None and not clock.room_for_another(study):
        args.trials = 0
    try:
        study.optimize(
            objective,
            args.trials,
            timeout=args.timeout if clock is None else clock.timeout(args.timeout),
            catch=(TrialFailed,),
            callbacks=[after_trial],
            gc_after_trial=True,  # free each trial's model before the next builds its own
        )
    except KeyboardInterrupt:
        sweep.results()
        say("sweep: interrupted; the running trial is marked failed; the same command goes on from here")
        raise
    rows, keys = sweep.results()
    print(format_leaderboard(rows, keys, sweep.metric))
    print(f"leaderboard: {sweep.out / 'leaderboard.csv'}")
    if args.top:
        retrain_top(study, rows, args, sweep.out)
    from loraclf.sweep.report import write_sweep_report

    page = write_sweep_report(sweep.out, study, rows, keys, sweep.metric, sweep.space, sweep.where)
    print(f"report: {page}")
    return 0


def _base_recipe(args) -> Recipe:
    """The recipe every trial starts from: --config, the flags, then key.sub=value overrides.

    Built here rather than by the CLI's ``resolve_recipe`` (which may need the model stack for a default recipe):
    ``--config`` is required, so a mistake in the space is reported before torch is imported.
    """
    from loraclf.config import apply_overrides, load_recipe

    flags = {"budget": "budget", "seed": "train.seed", "epochs": "train.epochs"}
    flags["max_train_samples"] = "data.max_train_samples"
    pairs = [f"{key}={getattr(args, dest)}" for dest, key in flags.items() if getattr(args, dest) is not None]
    recipe = apply_overrides(load_recipe(args.config), pairs + list(args.overrides or []))
    if args.metric:
        recipe.train.metric = args.metric  # the kept checkpoint is the best by the metric the sweep optimises
    if args.quiet:
        recipe.train.progress = False
    return validate_recipe(recipe)


def _check_args(args) -> None:
    if args.trials < 0:
        raise UserError(f"--trials must be 0 or more, got {args.trials}")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    if args.top is not None and args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    for flag in ("seeds", "test"):
        if getattr(args, flag) and args.top is None:
            raise UserError(f"--{flag} applies to the retrained best trials: give --top K with it")
    if args.study is not None and not args.study.strip():
        raise UserError("--study: give a non-empty study name")


def _check_record(out: Path, study: str, storage: str) -> None:
    """DIR/sweep.json names the study a sweep folder holds; another study in the same folder is refused."""
    path = out / "sweep.json"
    if not path.is_file():
        return
    prev = json.loads(path.read_text(encoding="utf-8"))
    if prev.get("study") != study or prev.get("storage") != storage:
        raise UserError(
            f"--out: '{out}' holds study '{prev.get('study')}' in {prev.get('storage')}; resume it with "
            f"--study {prev.get('study')} (and that --storage) or choose another --out"
        )


def _write_record(out: Path, study: str, storage: str, metric: str, space: list[Dist]) -> None:
    record = {
        "study": study,
        "storage": storage,
        "metric": metric,
        "space": {d.key: d.describe() for d in space},
    }
    atomic_write_text(out / "sweep.json", json.dumps(record, indent=1))


def _trial_line(trial, metric: str) -> str:
    a = trial.user_attrs
    state = "over budget" if a.get("over_budget") else trial.state.name.lower()
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    score = f"; {metric} {a[metric]:.4f}" if isinstance(a.get(metric), (int, float)) else ""
    size = f"; {a['trainable']:,} trainable" if "trainable" in a else ""
    secs = f", {a['train_seconds']:.0f} s" if a.get("train_seconds") is not None else ""
    note = f" ({a['note']})" if a.get("note") else ""
    return f"sweep: trial {trial.number} {state}: {params}{score}{size}{secs}{note}"


def retrain_top(study, rows: list[dict], args, out: Path) -> None:
    """Retrain the K best finished trials once per seed with ``loraclf compare`` (mean ± standard deviation)."""
    from loraclf.config import save_recipe
    from loraclf.toolbox.compare import run_compare

    best = [r for r in rows if r["state"] == "complete"][: args.top]
    if not best:
        say("sweep: --top: no finished trial to retrain yet")
        return
    top = out / "top"
    top.mkdir(exist_ok=True)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    entries = []
    for r in best:
        name, t = f"trial-{r['trial']:04d}", trials[r["trial"]]
        recipe = from_dict(Recipe, t.user_attrs["recipe"], source=name)
        recipe.description = f"sweep {study.study_name} {name}: " + " ".join(
            f"{k}={v}" for k, v in t.params.items()
        )
        save_recipe(recipe, top / f"{name}.yaml")
        entries.append(f"{name}={top / f'{name}.yaml'}")
    seeds = args.seeds or "1,2,3"
    print(f"\nretraining the {len(best)} best trial(s) with seeds {seeds}:")
    compare_args = argparse.Namespace(
        entries=entries, overrides=[], model=None, train=list(args.train), eval=args.eval, test=args.test,
        out=str(top), epochs=None, max_train_samples=None, seed=None, seeds=seeds, val_size=None, json=False,
        quiet=args.quiet,
    )  # fmt: skip
    run_compare(compare_args)
