import io

from datasetddpm.progress import PlainProgress, progress_bar


def test_plain_progress_prints_real_totals_rates_and_the_end():
    out = io.StringIO()
    bar = PlainProgress(stream=out, interval=3600)  # only the completion line within this test
    task = bar.add_task("sample", total=4, completed=1, info="")
    bar.update(task, advance=1, info="2.0 samples/s")
    assert out.getvalue() == ""  # not yet: at most one line per interval
    bar.update(task, completed=4)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sample: 4/4 (100%) 2.0 samples/s elapsed 0s")
    bar.update(task, completed=4)
    assert len(out.getvalue().splitlines()) == 1  # a finished task is reported once


def test_plain_progress_at_an_interval_has_an_eta():
    out = io.StringIO()
    bar = PlainProgress(stream=out, interval=0)
    task = bar.add_task("train-deeplab", total=10, info="")
    bar.tasks[task]["start"] -= 10.0  # 10 s ago
    bar.update(task, completed=5, info="epoch 0 loss 1.2")
    assert out.getvalue().strip() == "train-deeplab: 5/10 (50%) epoch 0 loss 1.2 elapsed 10s, 10s left"


def test_not_a_terminal_gets_plain_lines():
    with progress_bar(True) as bar:  # pytest captures output: not a terminal
        assert isinstance(bar, PlainProgress)


def test_a_reset_task_restarts_its_clock_and_reports_its_end_again():
    out = io.StringIO()
    bar = PlainProgress(stream=out, interval=3600)
    task = bar.add_task("train-ensemble epoch 0", total=2, info="")
    bar.update(task, completed=2)
    bar.tasks[task]["start"] -= 100.0
    bar.update(task, completed=0, description="train-ensemble epoch 1")
    assert bar.tasks[task]["start_completed"] == 0 and bar.tasks[task]["start"] > bar.tasks[task]["printed"] - 1
    bar.update(task, completed=2)
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["train-ensemble epoch 0",
                                                                         "train-ensemble epoch 1"]
