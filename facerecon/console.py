"""The terminal: a run's rich progress bar with live loss and cosine, then a summary; and
every results table the commands print."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from facerecon.core.context import RunContext
from facerecon.core.hookspecs import hookimpl
from facerecon.core.kinds import StepInfo
from facerecon.judges import scoring as judging


class ConsoleReporter:
    """A lifecycle plugin the CLI registers for the length of a run."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task = None

    @hookimpl
    def before_run(self, context: RunContext) -> None:
        spec = context.spec
        self.console.print(
            f"[bold]{escape(spec.name)}[/]: {len(context.targets)} target(s) x "
            f"{max(len(context.guide_images), 1)} guide(s) x {spec.restarts} restart(s) = "
            f"batch {len(context.elements)} on {spec.model.name}, {spec.solver.name}",
            soft_wrap=True,
        )
        for note in context.target_faces:
            self.console.print(f"  {escape(note)}", soft_wrap=True)  # which face of a photo
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4g}  cos {task.fields[cos]:.3f}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(
            "solving", total=context.total_steps or None, loss=float("nan"), cos=float("nan")
        )
        self.progress.start()

    @hookimpl
    def after_step(self, context: RunContext, step: StepInfo) -> None:
        self.progress.update(
            self.task,
            completed=step.step + 1,
            loss=float(np.mean(step.terms["total"])),
            cos=float(np.mean(step.terms["cosine"])),
        )

    @hookimpl
    def after_run(self, context: RunContext) -> None:
        self._stop()
        result = context.result
        table = Table(title=f"{context.spec.name}: {result.steps} steps, {result.stop_reason}")
        judged = judging.columns(result.judges)
        detector = any(judging.detection(s) for s in result.judges)
        headers = ["target", "kept", "distance", "cosine", "total loss"]
        headers += [h for h, _, _ in judged] + (["face"] if detector else [])
        for col in headers:
            table.add_column(col, justify="right" if col != "target" else "left")
        for target, index in enumerate(result.best):
            scores = result.judges[target] if result.judges else {}
            found = judging.detection(scores)
            table.add_row(
                str(target),
                context.elements[index].label,
                f"{result.terms['distance'][index]:.4f}",
                f"{result.terms['cosine'][index]:.4f}",
                f"{result.terms['total'][index]:.4g}",
                *(judging.mark(scores.get(judge, {}), key) for _, judge, key in judged),
                *([("yes" if found["face"] else "no") if found else "-"] if detector else []),
            )
        if judged:
            table.caption = (
                "judges: cosine to the target's photo (I) and to other photos of the person "
                "(II, mean); ✓ per false-match rate (1e-2, 1e-3) whose threshold it passes"
            )
        self.console.print(table)
        if context.judges is not None and context.judges.skipped:
            for name, why in context.judges.skipped.items():
                self.console.print(f"judge {name!r} left out: {escape(why)}", soft_wrap=True)
        if result.run_id:
            self.console.print(f"MLflow run [bold]{result.run_id}[/] (facerecon ui to browse)")

    @hookimpl
    def on_error(self, context: RunContext, error: BaseException) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class SweepReporter:
    """A line per finished variant, then a table of all of them."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)

    @hookimpl
    def before_sweep(self, sweep) -> None:
        self.console.print(
            f"[bold]{escape(sweep.spec.name)}[/]: sweep of "
            f"{len(sweep.variants)} variant(s), {escape(sweep.executor)}"
        )

    @hookimpl
    def after_variant(self, sweep, outcome) -> None:
        mark = "[green]done[/]" if outcome.status == "FINISHED" else "[red]failed[/]"
        took = f" in {outcome.seconds:.1f} s" if outcome.seconds is not None else ""
        extra = f": {escape(outcome.error)}" if outcome.error else ""
        self.console.print(f"{mark} {escape(outcome.name)}{took}{extra}")

    @hookimpl(trylast=True)  # after tracking has filled in the run ids
    def after_sweep(self, sweep) -> None:
        table = Table(title=f"{escape(sweep.spec.name)}: sweep")
        # the judges' identity scores and face rate, means over the targets
        judged = [
            k
            for k in dict.fromkeys(k for o in sweep.outcomes for k in o.judges)
            if k.endswith(("/type1", "/type2_mean", "/face"))
        ]
        headers = ["variant", "status", "distance", "cosine", *judged, "seconds", "run"]
        for col in headers:
            table.add_column(col.removeprefix("judge/"))
        for o in sweep.outcomes:
            table.add_row(
                escape(o.name),
                o.status,
                "" if o.distance is None else f"{o.distance:.4f}",
                "" if o.cosine is None else f"{o.cosine:.4f}",
                *("" if k not in o.judges else f"{o.judges[k]:.3f}" for k in judged),
                "" if o.seconds is None else f"{o.seconds:.1f}",
                o.run_id or "",
            )
        self.console.print(table)
        if parent := sweep.run_id:
            self.console.print(f"MLflow parent run [bold]{parent}[/]")


def lineup_table(rows: list[dict]) -> Table:
    """The line-up scores: one row per observer's answers to one method's sheets."""
    table = Table("method", "observer", "matched", "expected by chance", "p")
    for r in rows:
        table.add_row(
            escape(r["method"]),
            escape(r["observer"]),
            f"{r['correct']} / {r['people']}",
            f"{r['expected by chance']:.1f}",
            f"{r['p']:.2g}",
        )
    return table


def plugins_table(rows: list[dict]) -> Table:
    """Every plugin: kind, name, package, parameters, doc."""
    table = Table("kind", "name", "package", "parameters", "description", show_lines=True)
    for row in rows:
        table.add_row(
            row["kind"], row["name"], row["package"], "\n".join(row["params"]), row["doc"]
        )
    return table


def layers_table(model: str, layers: list[tuple[str, tuple[int, ...]]]) -> Table:
    """A model's tappable layers with their shapes."""
    table = Table("layer", "shape", title=f"{model}: tappable layers")
    for name, shape in layers:
        table.add_row(name, "x".join(map(str, shape)))
    return table


def evaluation_table(result, threshold: float) -> Table:
    """Generators against the iterative solver on held-out targets (paper, Table 1)."""
    table = Table(title=f"{result.spec.name}: {len(result.target_images)} held-out targets")
    columns = (
        "method",
        "mean loss",
        "mean distance",
        "mean cosine",
        f"distance < {threshold:g}",
        "loss / iterative",
        "images/s",
    )
    summary = result.summary()
    # the judges' means: other recognizers' type I cosine, the detector's face rate
    judged = [k for k in (summary[0] if summary else {}) if k.endswith(("/type1", "/face"))]
    for column in (*columns, *(k.removeprefix("judge/") for k in judged)):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in summary:
        speed = row["images_per_second"]
        table.add_row(
            row["method"],
            f"{row['mean_total']:.4g}",
            f"{row['mean_distance']:.4f}",
            f"{row['mean_cosine']:.4f}",
            f"{row['verified']:.0%}",
            f"{row['loss_ratio']:.2f}",
            "-" if speed != speed else f"{speed:.1f}",
            *(f"{row[k]:.3f}" for k in judged),
        )
    return table


def attack_table(result) -> Table:
    """The attack's success rates per method, judge and setting."""
    rows = result.rows()
    rates = [r for r in ("1e-2", "1e-3") if any(f"sar1@{r}" in row for row in rows)]
    table = Table(title=f"{result.spec.name}: attack on {len(result.collection.people)} people")
    for column in (
        "method",
        "judge",
        "setting",
        *(f"SAR I @{r}" for r in rates),
        *(f"SAR II @{r}" for r in rates),
        "cos I",
        "cos II",
        "face",
        "s/template",
    ):
        table.add_column(column, justify="left" if column in ("method", "judge") else "right")
    for row in rows:

        def pct(value: float) -> str:
            return "-" if value != value else f"{value:.0%}"

        table.add_row(
            row["method"], row["judge"], row["setting"],
            *(pct(row[f"sar1@{r}"]) for r in rates), *(pct(row[f"sar2@{r}"]) for r in rates),
            f"{row['mean_type1']:.3f}", "-" if row["mean_type2"] != row["mean_type2"]
            else f"{row['mean_type2']:.3f}", pct(row["face_rate"]),
            "-" if row["seconds_per_template"] != row["seconds_per_template"]
            else f"{row['seconds_per_template']:.2f}",
        )  # fmt: skip
    return table


def calibration_table(model: str, record: dict) -> Table:
    """A calibration's thresholds, their measured false-match rates and genuine pass rates."""
    table = Table(
        "false-match rate",
        "threshold",
        "measured FMR",
        "genuine pass",
        title=f"{model}: {record['photos']} photos of {record['identities']} people",
    )
    genuine = record["genuine"]
    for rate, t in record["thresholds"].items():
        passed = genuine["pass_rate"][rate]
        table.add_row(
            rate,
            f"{t:.4f}",
            f"{record['measured_fmr'][rate]:.2e}",
            "-" if passed is None else f"{passed:.0%} of {genuine['n']}",
        )
    return table
