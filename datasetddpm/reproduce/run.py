"""Run a `reproduce` plan stage by stage (skipping finished ones), write the table; or print the plan."""

from __future__ import annotations

import time

from ..errors import OptionError
from ..io import atomic_path, check_output_dir, read_json, run_lock, write_json
from .config import ReproduceConfig, check_config
from .stages import all_stages, problem_for
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


def reproduce(cfg: ReproduceConfig, *, log=print) -> dict:
    """Run every stage not yet finished, in order, then write results.json and results.md in `--out`."""
    check_inputs(cfg)
    stages = all_stages(cfg)
    with run_lock(cfg.root):
        progress = _stored_progress(cfg)
        if not (cfg.root / CONFIG_FILE).is_file():
            write_json(cfg.root / CONFIG_FILE, {"config": cfg.key()})
        for stage in stages:
            if stage.name in progress and stage.folder.exists():  # a deleted output is made again
                log(f"{stage.name}: done, skipped")
                continue
            log(f"{stage.name}: {stage.work} -> {stage.folder}")
            started = time.perf_counter()
            summary = stage.run()
            progress[stage.name] = {**summary, "seconds": round(time.perf_counter() - started, 1)}
            write_json(cfg.root / PROGRESS_FILE, progress)
        return _write_results(cfg, progress)


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


def plan_reproduce(cfg: ReproduceConfig) -> str:
    """`reproduce --dry-run`: each stage, finished or to do, with its estimated time and disk on this device
    (from the same timed steps the commands' own --dry-run use); nothing is written."""
    from ..plans import format_duration
    from .estimate import Estimator
    done = check_inputs(cfg)
    stages = all_stages(cfg)
    with Estimator(cfg) as estimator:
        rows = [(s.name, "done" if s.name in done else "to do", *(((0.0, 0, "")) if s.name in done
                                                                  else estimator(s))) for s in stages]
    width = max(len(r[0]) for r in rows)
    lines = [f"dry run of `datasetddpm reproduce {cfg.preset}` (nothing written), results in {cfg.root}:"]
    for name, status, seconds, disk, note in rows:
        lines.append(f"  {name:<{width}}  {status:<5}  {format_duration(seconds):>7}  {disk / 2**20:9.1f} MiB  {note}")
    todo = sum(r[2] for r in rows)
    disk = sum(r[3] for r in rows)
    lines.append(f"  total to do: {format_duration(todo)}, about {disk / 2**30:.2f} GiB of disk (an upper bound: "
                 f"uncompressed image and mask bytes); {estimator.timed}")
    return "\n".join(lines)

