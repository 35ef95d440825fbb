"""The peer benchmark's report (bench/peer_trl_dpo.py): medians over the repeats, summaries, and
the tables it prints."""

from __future__ import annotations

import statistics

from peer_inputs import BETAS, Work


def median(values):
    return statistics.median(values) if values else float("nan")


def same_tokens(work: Work, trl_runs: list[dict]) -> bool:
    return all(
        run["digests"] == work.digests
        and run["train_tokens"] == work.train_tokens
        and run["steps_done"] == work.steps
        for run in trl_runs
    )


def summarize(work: Work, runs: list[dict]) -> dict:
    ours = [r["ours"] for r in runs]
    trl_runs = [r["trl"] for r in runs]
    our_wall = median([r["wall_s"] for r in ours])
    trl_wall = median([r["wall_s"] for r in trl_runs])
    our_cpu = median([r["cpu_s"] for r in ours])
    trl_cpu = median([r["cpu_s"] for r in trl_runs])
    beta = str(work.beta)
    return {
        "our_wall_s": our_wall,
        "trl_wall_s": trl_wall,
        "trl_over_ours": trl_wall / our_wall,
        "trl_over_ours_per_repeat": [
            t["wall_s"] / o["wall_s"] for o, t in zip(ours, trl_runs, strict=True)
        ],
        "our_cpu_s": our_cpu,
        "trl_cpu_s": trl_cpu,
        "trl_over_ours_cpu": trl_cpu / our_cpu,
        "our_tokens_per_s": work.train_tokens / our_wall,
        "trl_tokens_per_s": work.train_tokens / trl_wall,
        "our_loop_tokens_per_s": median(
            [r["dpo"][beta]["speed"]["tokens_per_second"] for r in ours]
        ),
        "trl_loop_tokens_per_s": median(
            [work.train_tokens / r["train_runtime_s"] for r in trl_runs]
        ),
        "our_peak_rss_mib": median([r["peak_rss_bytes"] for r in ours]) / 2**20,
        "trl_peak_rss_mib": median([r["peak_rss_bytes"] for r in trl_runs]) / 2**20,
        "our_processes_s": {
            name: median([r["processes"][name]["wall_s"] for r in ours])
            for name in ours[0]["processes"]
        },
        "our_processes_cpu_s": {
            name: median([r["processes"][name]["cpu_s"] for r in ours])
            for name in ours[0]["processes"]
        },
        "trl_phases_s": {
            name: median([r["phases_s"][name] for r in trl_runs])
            for name in trl_runs[0]["phases_s"]
        },
        "trl_phases_cpu_s": {
            name: median([r["phases_cpu_s"][name] for r in trl_runs])
            for name in trl_runs[0]["phases_cpu_s"]
        },
        "our_tokens_match": all(
            r["dpo"][beta]["speed"]["tokens"] == work.train_tokens for r in ours
        ),
        "trl_same_tokens": same_tokens(work, trl_runs),
        "our_eval_loss": median([r["dpo"][beta]["results"]["eval/loss"] for r in ours]),
        "trl_eval_loss": median([r["eval"]["eval_loss"] for r in trl_runs]),
    }


def table(rows: list[tuple[Work, dict]], repeats: int) -> str:
    head = (
        f"{'config':<9} {'steps':>5} {'ours s':>7} {'TRL s':>7} {'TRL/ours':>8} {'CPU T/o':>7} "
        f"{'ours tok/s':>10} {'TRL tok/s':>9} {'ours RSS':>9} {'TRL RSS':>9} {'same tokens':>11}"
    )
    lines = [
        f"medians of {repeats} run(s) each; TRL/ours = wall-time ratio (> 1: ours is faster), "
        "CPU T/o = the same for CPU seconds; tok/s = training tokens / whole wall time",
        head,
    ]
    for work, s in rows:
        same = "yes" if s["trl_same_tokens"] and s["our_tokens_match"] else "NO"
        lines.append(
            f"{work.name:<9} {work.steps:>5} {s['our_wall_s']:>7.1f} {s['trl_wall_s']:>7.1f} "
            f"{s['trl_over_ours']:>7.2f}x {s['trl_over_ours_cpu']:>6.2f}x "
            f"{s['our_tokens_per_s']:>10.0f} {s['trl_tokens_per_s']:>9.0f} "
            f"{s['our_peak_rss_mib']:>5.0f} MiB {s['trl_peak_rss_mib']:>5.0f} MiB {same:>11}"
        )
    for work, s in rows:
        ours = ", ".join(
            f"{k} {v:.1f}/{s['our_processes_cpu_s'][k]:.1f}"
            for k, v in s["our_processes_s"].items()
        )
        trl_phases = ", ".join(
            f"{k} {v:.1f}/{s['trl_phases_cpu_s'][k]:.1f}" for k, v in s["trl_phases_s"].items()
        )
        ratios = ", ".join(f"{r:.2f}" for r in s["trl_over_ours_per_repeat"])
        lines += [
            f"{work.name}: {work.train_tokens} training tokens; TRL/ours per repeat {ratios}; "
            f"CPU s ours {s['our_cpu_s']:.1f}, TRL {s['trl_cpu_s']:.1f}",
            f"  ours [wall/CPU s]: {ours}",
            f"  TRL in its process [wall/CPU s]: {trl_phases}",
            f"  training-loop tok/s ours {s['our_loop_tokens_per_s']:.0f}, TRL "
            f"{s['trl_loop_tokens_per_s']:.0f}; held-out loss ours {s['our_eval_loss']:.4f}, TRL "
            f"{s['trl_eval_loss']:.4f}",
        ]
    return "\n".join(lines)


def per_process(side_runs: list[dict]) -> dict:
    """Median wall and CPU seconds of each process of a side, over the repeats."""
    return {
        name: {
            "wall_s": median([r[name]["wall_s"] for r in side_runs]),
            "cpu_s": median([r[name]["cpu_s"] for r in side_runs]),
        }
        for name in side_runs[0]
    }


def sweep_table(work: Work, runs: list[dict]) -> tuple[str, dict]:
    ours, trl = [r["ours"] for r in runs], [r["trl"] for r in runs]
    summary = {
        "jobs": ours[0]["jobs"],
        "threads_per_process": ours[0]["threads_per_process"],
        "our_wall_s": median([o["wall_s"] for o in ours]),
        "trl_wall_s": median([t["wall_s"] for t in trl]),
        "trl_over_ours_per_repeat": [
            t["wall_s"] / o["wall_s"] for o, t in zip(ours, trl, strict=True)
        ],
        "our_cpu_s": median([o["cpu_s"] for o in ours]),
        "trl_cpu_s": median([t["cpu_s"] for t in trl]),
        "our_processes": per_process([o["processes"] for o in ours]),
        "trl_runs": per_process([t["runs"] for t in trl]),
        "trl_same_tokens": same_tokens(work, [run for t in trl for run in t["runs"].values()]),
    }
    summary["trl_over_ours"] = summary["trl_wall_s"] / summary["our_wall_s"]
    summary["trl_over_ours_cpu"] = summary["trl_cpu_s"] / summary["our_cpu_s"]
    ratios = ", ".join(f"{r:.2f}" for r in summary["trl_over_ours_per_repeat"])
    s = summary
    text = (
        f"sweep ({work.name}, {work.steps} steps, beta {'/'.join(map(str, BETAS))}), medians of "
        f"{len(runs)} run(s), jobs N={s['jobs']} processes at a time on each side "
        f"({s['threads_per_process']} OMP/MKL threads each; ours' ref-logps alone, all CPUs); "
        f"wall s = first start to last end: ours {s['our_wall_s']:.1f} s (reference once + "
        f"4 DPO), TRL {s['trl_wall_s']:.1f} s (4 runs), TRL/ours {s['trl_over_ours']:.2f}x (per "
        f"repeat {ratios}); CPU s (summed) ours {s['our_cpu_s']:.1f}, TRL {s['trl_cpu_s']:.1f} "
        f"({s['trl_over_ours_cpu']:.2f}x); same tokens: {'yes' if s['trl_same_tokens'] else 'NO'}"
        "\n  ours [wall/CPU s]: "
        + ", ".join(
            f"{k} {v['wall_s']:.1f}/{v['cpu_s']:.1f}" for k, v in s["our_processes"].items()
        )
        + "\n  TRL [wall/CPU s]: "
        + ", ".join(
            f"beta {k} {v['wall_s']:.1f}/{v['cpu_s']:.1f}" for k, v in s["trl_runs"].items()
        )
    )
    return text, summary
