"""Run a `reproduce` plan stage by stage (skipping finished ones), write the table; or print the plan.

For a batch queue (a Slurm job array) the run splits in three: `--stop-before sample` runs the stages
before sampling (the data, direct mode, the labellers) and stops; `--task-index I --task-count N` makes
task I's shards of every sample stage, labelled as they are made (exactly as `sample --ensemble
--task-index I` writes them), under a part lock of `--out`, so the N tasks run side by side and nothing
else; a last plain run finds those shards committed, skips regenerating them and runs the rest (finalize,
train-deeplab, compare, the table). The output does not depend on how the shards were split."""

from __future__ import annotations

import time

from ..distributed import Tasks
from ..errors import OptionError
from ..io import atomic_path, check_output_dir, read_json, run_lock, write_json
from ..pipeline.part_lock import part_lock
from .config import ReproduceConfig, check_config
from .stages import LATER_KINDS, Stage, all_stages, problem_for, shard_samples, task_shards
from .table import results_table, table_markdown

CONFIG_FILE, PROGRESS_FILE = "reproduce.json", "progress.json"


def _stored_progress(cfg: ReproduceConfig) -> dict:
    """Finished stages of the run in `--out`; a run of other options there is refused."""
    path = cfg.root / CONFIG_FILE
    if not path.is_file():
        return {}
    stored = read_json(path).get("config", {})
    differ = sorted(k for k in set(stored) | set(cfg.key()) if stored.get(k) != cfg.key().get(k))
    if differ:
        raise OptionError("--out", f"{cfg.root} holds a reproduce run with other {', '.join(differ)}; rerun with "
                                   "its options to resume it, or choose another --out")
    progress = cfg.root / PROGRESS_FILE
    return read_json(progress) if progress.is_file() else {}


def check_inputs(cfg: ReproduceConfig) -> dict:
    """Every option and input checked before anything is written; returns the stages already finished."""
    check_config(cfg)
    problem_for(cfg)  # the model resolves and takes the preset's blocks and steps
    if cfg.stylegan2:
        problem_for(cfg, cfg.stylegan2)
    check_output_dir(cfg.root)
    return _stored_progress(cfg)


def finished(stage: Stage, progress: dict) -> bool:
    return stage.name in progress and stage.folder.exists()  # a deleted output is made again


def check_split(stop_before: str | None, tasks: Tasks) -> None:
    """--stop-before and the task options (or a Slurm array's variables), checked before anything is written."""
    if stop_before is not None and stop_before not in LATER_KINDS:
        raise OptionError("--stop-before", f"must be one of {', '.join(LATER_KINDS)}, got {stop_before!r}")
    if stop_before is not None and tasks.count > 1:
        raise OptionError("--stop-before", f"not with --task-index/--task-count (task {tasks.index} of {tasks.count}): "
                                           "a batch task runs only its shards of the sample stages")


def reproduce(cfg: ReproduceConfig, *, log=print, stop_before: str | None = None, tasks: Tasks = Tasks()) -> dict:
    """Run every stage not yet finished, in order, then write results.json and results.md in `--out`. With
    `stop_before` (a kind of LATER_KINDS) only the stages before every method's stage of that kind run; the
    result then names the stages left ({"left": [...]}) and no table is written until none is left. With
    `tasks` (several): this task's part only (`reproduce_task`)."""
    check_split(stop_before, tasks)
    if tasks.count > 1:
        return reproduce_task(cfg, tasks, log=log)
    check_inputs(cfg)
    stages = all_stages(cfg)
    last = LATER_KINDS.index(stop_before) + 1 if stop_before else len(LATER_KINDS) + 1
    with run_lock(cfg.root):
        progress = _stored_progress(cfg)
        if not (cfg.root / CONFIG_FILE).is_file():
            write_json(cfg.root / CONFIG_FILE, {"config": cfg.key()})
        for stage in stages:
            if stage.phase >= last:
                continue
            if finished(stage, progress):
                log(f"{stage.name}: done, skipped")
                continue
            log(f"{stage.name}: {stage.work} -> {stage.folder}")
            started = time.perf_counter()
            summary = stage.run()
            progress[stage.name] = {**summary, "seconds": round(time.perf_counter() - started, 1)}
            write_json(cfg.root / PROGRESS_FILE, progress)
        left = [s.name for s in stages if not finished(s, progress)]
        if stop_before and left:
            return {"stopped_before": stop_before, "left": left}
        return _write_results(cfg, progress)


def _task_stage_names(stages: list[Stage]) -> set[str]:
    """The stages batch tasks make (the sample stages and the labels made in the same pass)."""
    return {name for s in stages if s.task_part for name in (s.name, *s.covers)}


def _check_splittable(cfg: ReproduceConfig, stages: list[Stage]) -> None:
    if not any(s.task_part for s in stages):
        raise OptionError("--task-count", f"reproduce {cfg.preset} runs direct mode only: it has no sample stage to "
                                          "split into tasks; run it without task options")


def _check_task_start(cfg: ReproduceConfig, stages: list[Stage], progress: dict) -> None:
    _check_splittable(cfg, stages)
    first = next((s for s in stages if s.phase == 0 and not finished(s, progress)), None)
    if first is not None:
        raise OptionError("--task-count", f"the stages before sampling are not done in {cfg.root} (first: "
                                          f"{first.name}); run the same command once with --stop-before sample and "
                                          "no task options, then the tasks")


def reproduce_task(cfg: ReproduceConfig, tasks: Tasks, *, log=print) -> dict:
    """Batch task `tasks.index` of `tasks.count`: its shards of every sample stage not yet finished, labelled as
    they are made, under the part lock `task-I` of `--out` (other tasks run beside it; a plain run of the folder
    is refused until they end). Records no progress: the finishing plain run finds the shards committed.
    Returns {"task", "tasks", "made": {stage: summary}, "left": [stages of the finishing run]}."""
    progress = check_inputs(cfg)
    stages = all_stages(cfg)
    _check_task_start(cfg, stages, progress)
    shards = task_shards(cfg, tasks)
    made = {}
    with part_lock(cfg.root, f"task-{tasks.index}"):
        for stage in (s for s in stages if s.task_part):
            names = " and ".join((stage.name, *(c.rsplit(": ", 1)[-1] for c in stage.covers)))
            if all(finished(s, progress) for s in stages if s.name in (stage.name, *stage.covers)):
                log(f"{names}: done, skipped")
                continue
            log(f"{names}, task {tasks.index} of {tasks.count}: {len(shards)} of {cfg.num_shards} shard(s), "
                f"{shard_samples(cfg, shards)} samples -> {stage.folder}")
            made[stage.name] = stage.task_part(tasks)
    by_task = _task_stage_names(stages)
    return {"task": tasks.index, "tasks": tasks.count, "made": made,
            "left": [s.name for s in stages if not finished(s, progress) and s.name not in by_task]}


def _write_results(cfg: ReproduceConfig, progress: dict) -> dict:
    from ..environment import describe, provenance
    environment = {**describe(), **provenance()}
    rows = results_table(cfg, progress)
    results = {"preset": cfg.preset, "table": rows, "config": cfg.key(),
               "stages": {name: progress[name] for name in progress}, "environment": environment}
    write_json(cfg.root / "results.json", results)
    with atomic_path(cfg.root / "results.md") as tmp:
        tmp.write_text(table_markdown(cfg, rows, environment))
    return results


def plan_reproduce(cfg: ReproduceConfig, stop_before: str | None = None, tasks: Tasks = Tasks()) -> str:
    """`reproduce --dry-run`: each stage, finished or to do, with its estimated time and disk on this device
    (from the same timed steps the commands' own --dry-run use); nothing is written. With `stop_before` or
    `tasks`, what this command runs and what is left to the other runs (a task: its share of the samples)."""
    from ..plans import format_duration
    from .estimate import Estimator
    check_split(stop_before, tasks)
    done = check_inputs(cfg)
    stages = all_stages(cfg)
    if tasks.count > 1:
        _check_splittable(cfg, stages)
    status = _plan_status(stages, done, stop_before, tasks)
    share = shard_samples(cfg, task_shards(cfg, tasks)) if tasks.count > 1 else None
    with Estimator(cfg) as estimator:
        rows = [(s.name, status[s.name], *(((0.0, 0, "")) if status[s.name] == "done" else estimator(s, share)))
                for s in stages]
    width, status_width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    lines = [f"dry run of `datasetddpm reproduce {cfg.preset}` (nothing written), results in {cfg.root}:"]
    for name, state, seconds, disk, note in rows:
        lines.append(f"  {name:<{width}}  {state:<{status_width}}  {format_duration(seconds):>7}  "
                     f"{disk / 2**20:9.1f} MiB  {note}")
    mine = [r for r in rows if r[1] in ("to do", f"task {tasks.index}")]
    lines.append(f"  total to do: {format_duration(sum(r[2] for r in mine))}, about "
                 f"{sum(r[3] for r in mine) / 2**30:.2f} GiB of disk (an upper bound: uncompressed image and mask "
                 f"bytes); {estimator.timed}")
    return "\n".join(lines + _split_notes(cfg, stop_before, tasks, set(status.values())))


def _plan_status(stages: list[Stage], done: dict, stop_before: str | None, tasks: Tasks) -> dict[str, str]:
    """done | to do (by this command) | first (before any task) | task I (its shards) | later (a later run)."""
    last = LATER_KINDS.index(stop_before) + 1 if stop_before else len(LATER_KINDS) + 1
    by_task = _task_stage_names(stages)
    status = {}
    for s in stages:
        if finished(s, done):
            status[s.name] = "done"
        elif tasks.count > 1:
            status[s.name] = "first" if s.phase == 0 else f"task {tasks.index}" if s.name in by_task else "later"
        else:
            status[s.name] = "to do" if s.phase < last else "later"
    return status


def _split_notes(cfg: ReproduceConfig, stop_before: str | None, tasks: Tasks, states: set[str]) -> list[str]:
    notes = []
    if tasks.count > 1:
        shares = [shard_samples(cfg, task_shards(cfg, Tasks(i, tasks.count))) for i in range(tasks.count)]
        mine = task_shards(cfg, tasks)
        idle = sum(1 for n in shares if n == 0)
        notes.append(f"  task {tasks.index} of {tasks.count}: {len(mine)} of {cfg.num_shards} shard(s) "
                     f"({shares[tasks.index]} of {cfg.n} samples) of each sample stage, labelled as they are made; "
                     f"the {tasks.count} tasks make " + (f"{min(shares)} to {max(shares)}" if min(shares) < max(shares)
                                                           else f"{max(shares)}") + " samples each"
                     + (f"; {idle} own no shard: a smaller --shard-size splits the run finer" if idle else ""))
        if "first" in states:
            notes.append("  'first': to be done before any task starts: run the same command once with "
                         "--stop-before sample and no task options")
    if "later" in states:
        notes.append("  'later': left to a run of the same command without " + (
            "task options, once every task is done" if tasks.count > 1 else f"--stop-before {stop_before}" + (
                " (or first to batch tasks: --task-index I --task-count N)" if stop_before == "sample" else "")))
    return notes
