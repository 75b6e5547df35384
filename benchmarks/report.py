"""The report of a run: a table on the terminal, JSON, Markdown and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

Row = tuple[str, str, str, str]


def write(result: dict[str, Any], out: Path) -> list[str]:
    """``latest.json``, ``latest.md`` and (with matplotlib) ``latest.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    said = []
    (out / "latest.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    said.append(f"wrote {out / 'latest.json'}")
    (out / "latest.md").write_text(markdown(result))
    said.append(f"wrote {out / 'latest.md'}")
    try:
        chart(result, out / "latest.png")
        said.append(f"wrote {out / 'latest.png'}")
    except ImportError:
        said.append("no chart: matplotlib is not installed (pip install -e '.[bench]')")
    return said


def _num(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def _ratio(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"


def _load(values: Any) -> str:
    return " / ".join(f"{v:.1f}" for v in values) if values else "?"


def _latency(figures: dict[str, Any]) -> str:
    return " / ".join(_num(figures.get(k), "", 0) for k in ("p50Ms", "p95Ms", "p99Ms")) + " ms"


def figures(result: dict[str, Any]) -> list[Row]:
    """(figure, value, floor, ratio) rows: each figure beside the floor that bounds it."""
    w, f, r = result["w1"], result["floors"], result["ratios"]
    acceptance, life = w["acceptance"], w["lifecycle"]
    ttt = life["timeToTerminal"]
    rows: list[Row] = [
        (
            f"acceptance, closed loop ({w['clients']} clients)",
            _num(acceptance["throughputPerS"], " msg/s"),
            "Starlette " + _num(f["starlette"]["throughputPerS"], " req/s"),
            _ratio(r["acceptanceVsStarlette"]),
        ),
        (
            "acceptance latency p50 / p95 / p99",
            _latency(acceptance),
            "Starlette " + _latency(f["starlette"]),
            "",
        ),
        (
            "load generator's own CPU per request",
            _num(acceptance.get("generatorCpuMsPerRequest"), " ms", 3),
            "Starlette run " + _num(generator_cpu(f["starlette"]), " ms", 3),
            "",
        ),
        (
            "full lifecycle (accepted → delivered+notified+indexed)",
            _num(life["throughputPerS"], " msg/s"),
            f"{_num(r['lifecycleFloorPerS'], ' msg/s')} ({r['lifecycleFloorFrom']})",
            _ratio(r["lifecycleVsFloor"]),
        ),
        ("time to terminal p50 / p99", f"{_num(ttt['p50Ms'])} / {_num(ttt['p99Ms'])} ms", "", ""),
    ]
    for stage, s in life.get("stages", {}).items():
        if s["messages"]:
            rows.append(
                (f"  … to {stage} p50 / p99", f"{_num(s['p50Ms'])} / {_num(s['p99Ms'])} ms", "", "")
            )
    rows += [
        (
            f"events/s ({_num(w['events']['perMessage'], '', 2)} per message)",
            _num(w["events"]["perS"], "/s"),
            "Postgres 1-row tx " + _num(f["postgresInsert"]["txPerS"], "/s"),
            _ratio(r["eventsVsPostgresInsertTx"]),
        ),
        (
            "events/s vs reading + decoding the log",
            _num(w["events"]["perS"], "/s"),
            "log decode " + _num(f["notificationLog"]["eventsPerS"], "/s"),
            _ratio(r["eventsVsLogDecode"]),
        ),
        (
            f"jobs/s ({_num(w['jobs']['perMessage'], '', 2)} per message)",
            _num(w["jobs"]["perS"], "/s"),
            "kombu publish+consume " + _num(f["kombu"]["roundTripPerS"], "/s"),
            _ratio(r["jobsVsKombuRoundTrip"]),
        ),
    ]
    return rows


def generator_cpu(load: dict[str, Any]) -> float | None:
    """The load generator's CPU ms per request: the mean over a floor's runs, if any."""
    runs = load.get("runs") or [load]
    values = [r["generatorCpuMsPerRequest"] for r in runs if r.get("generatorCpuMsPerRequest")]
    return round(sum(values) / len(values), 3) if values else None


LATENCY_HEADER = (
    "phase",
    "accepted",
    "sent/s",
    "accepted/s",
    "p50 / p95 / p99",
    "lifecycle/s",
    "send lag p99",
    "generator CPU/req",
)


def latency_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    w = result["w1"]
    rows: list[tuple[str, ...]] = [
        (
            "closed loop",
            _num(w["acceptance"]["ok"]),
            "-",
            _num(w["acceptance"]["throughputPerS"]),
            _latency(w["acceptance"]),
            _num(w["lifecycle"]["throughputPerS"]),
            "-",
            _num(w["acceptance"].get("generatorCpuMsPerRequest"), " ms", 3),
        )
    ]
    for o in w.get("openLoop", []):
        rows.append(
            (
                f"open loop {o['offeredPerS']:g}/s",
                f"{o['ok']}/{o['requests']}",
                _num(o["achievedSendPerS"]),
                _num(o["throughputPerS"]),
                _latency(o),
                _num(o["lifecyclePerS"]),
                _num(o.get("sendLagP99Ms"), " ms", 1),
                _num(o.get("generatorCpuMsPerRequest"), " ms", 3),
            )
        )
    return rows


def process_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    cpu = result["w1"]["cpu"]
    rows: list[tuple[str, ...]] = []
    for role, p in result["processes"].items():
        sending = cpu["sending"]["processes"].get(role, {}).get("cores")
        draining = cpu["draining"]["processes"].get(role, {}).get("cores")
        per_message = cpu.get("msPerMessage", {}).get(role)
        rows.append(
            (
                role,
                _num(p["peakRssMb"], " MB"),
                _num(sending, "", 2),
                _num(draining, "", 2),
                _num(per_message, " ms", 2),
            )
        )
    rows.append(
        (
            "machine (every process on it)",
            "",
            _num(cpu["sending"]["machineBusyCores"], "", 2),
            _num(cpu["draining"]["machineBusyCores"], "", 2),
            "",
        )
    )
    return rows


JOB_HEADER = ("queue", "jobs completed in W1", "run time p50 / p95")


def job_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    jobs = result["w1"]["jobs"]
    times = jobs.get("runTimeByQueue", {})
    return [
        (
            queue,
            _num(count),
            " / ".join(_num(times.get(queue, {}).get(k)) for k in ("p50Ms", "p95Ms")) + " ms",
        )
        for queue, count in jobs["byQueue"].items()
    ]


PROCESS_HEADER = ("process", "peak RSS", "cores sending", "cores draining", "CPU per message")


def table(result: dict[str, Any], console: Console) -> None:
    meta = result["meta"]
    title = (
        f"W1: {result['w1']['workload']['messages']:,} messages — commit "
        f"{(meta.get('commit') or '?')[:10]}{' (dirty tree)' if meta.get('dirty') else ''}"
    )
    main = Table(title=title)
    for name in ("figure", "measured", "floor (same run)", "ratio"):
        main.add_column(name)
    for row in figures(result):
        main.add_row(*row)
    console.print(main)
    latency = Table(title="acceptance latency")
    for name in LATENCY_HEADER:
        latency.add_column(name)
    for lrow in latency_rows(result):
        latency.add_row(*lrow)
    console.print(latency)
    processes = Table(title="processes during W1 (CPU in cores used)")
    for name in PROCESS_HEADER:
        processes.add_column(name)
    for prow in process_rows(result):
        processes.add_row(*prow)
    console.print(processes)
    jobs = Table(title="jobs")
    for name in JOB_HEADER:
        jobs.add_column(name)
    for jrow in job_rows(result):
        jobs.add_row(*jrow)
    console.print(jobs)


def _md(header: tuple[str, ...], rows: list[tuple[str, ...]] | list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    head = (
        f"W1, {result['w1']['workload']['messages']:,} messages, "
        f"{result['w1']['clients']} clients — "
        f"commit `{meta.get('commit')}`{' + uncommitted changes' if meta.get('dirty') else ''}, "
        f"{meta['startedAt']}, {meta['machine']['cores']} cores, "
        f"load average {_load(meta.get('loadAverageStart'))} at the start, "
        f"{_load(meta.get('loadAverageEnd'))} at the end\n\n"
    )
    return (
        head
        + _md(("figure", "measured", "floor (same run)", "ratio"), figures(result))
        + "\n"
        + _md(LATENCY_HEADER, latency_rows(result))
        + "\n"
        + _md(PROCESS_HEADER, process_rows(result))
        + "\n"
        + _md(JOB_HEADER, job_rows(result))
    )


def chart(result: dict[str, Any], path: Path) -> None:
    """Four panels: ratios to floors, acceptance latency, stage latency, process footprint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, r = result["w1"], result["ratios"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle(
        f"Courier W1 ({w['workload']['messages']:,} messages, {w['clients']} clients) — "
        f"commit {(result['meta'].get('commit') or '?')[:10]}"
        f"{' (dirty)' if result['meta'].get('dirty') else ''}"
    )

    ax = axes[0][0]
    names = [
        "acceptance\nvs Starlette",
        "lifecycle\nvs floor",
        "events/s\nvs PG tx/s",
        "jobs/s\nvs kombu",
        "events/s\nvs log decode",
    ]
    values = [
        r["acceptanceVsStarlette"],
        r["lifecycleVsFloor"],
        r["eventsVsPostgresInsertTx"],
        r["jobsVsKombuRoundTrip"],
        r["eventsVsLogDecode"],
    ]
    ax.bar(names, [v or 0 for v in values], color="#4477aa")
    ax.axhline(1.0, color="#cc3311", linestyle="--", linewidth=1)
    ax.set_title("measured ÷ floor (1.0 = as fast as the floor)")
    for i, v in enumerate(values):
        ax.text(i, (v or 0), _ratio(v), ha="center", va="bottom", fontsize=9)

    ax = axes[0][1]
    phases = [("closed", w["acceptance"])] + [
        (f"open {o['offeredPerS']:g}/s", o) for o in w.get("openLoop", [])
    ]
    for k, (key, color) in enumerate(
        (("p50Ms", "#66ccee"), ("p95Ms", "#4477aa"), ("p99Ms", "#222255"))
    ):
        xs = [i + (k - 1) * 0.27 for i in range(len(phases))]
        ax.bar(xs, [p.get(key) or 0 for _, p in phases], width=0.27, label=key[:3], color=color)
    ax.set_xticks(range(len(phases)), [name for name, _ in phases])
    ax.set_ylabel("ms")
    ax.set_title("acceptance latency")
    ax.legend()

    ax = axes[1][0]
    stages = {"terminal": w["lifecycle"]["timeToTerminal"], **w["lifecycle"].get("stages", {})}
    labels = [s for s, v in stages.items() if v.get("messages")]
    for k, (key, color) in enumerate((("p50Ms", "#66ccee"), ("p99Ms", "#222255"))):
        xs = [i + (k - 0.5) * 0.4 for i in range(len(labels))]
        ax.bar(
            xs,
            [(stages[s].get(key) or 0) / 1000 for s in labels],
            width=0.4,
            label=key[:3],
            color=color,
        )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("s after accepted")
    ax.set_title("time from accepted to each stage")
    ax.legend()

    ax = axes[1][1]
    roles = list(result["processes"])
    ax.bar(roles, [result["processes"][p]["peakRssMb"] or 0 for p in roles], color="#228833")
    ax.set_ylabel("MB")
    ax.set_title("peak RSS per process")

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
