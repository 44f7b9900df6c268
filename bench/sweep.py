"""A sweep of experiments: every run's JSON line, a Markdown table and PNG plots per round.

    runs = acceptance_grid(["nsl-kdd", "unsw-nb15"], rounds=15)
    sweep(runs, out_dir)      # results.jsonl (resumable), table.md, plot-*.png

A combination the privacy-mode validator refuses is listed in the table with its reason
instead of being run. Runs already in results.jsonl (same configuration) are not re-run.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from ztfl.bench.byzantine import ExperimentConfig, run_experiment
from ztfl.robustness.result import RobustnessError

NONE_DEFENSES = ("fedavg", "krum", "multi-krum", "median", "trimmed-mean", "geomed", "flame", "shap", "shap-mad")
GROUPED_DEFENSES = ("fedavg", "median", "geomed", "multi-krum", "trimmed-mean")


def acceptance_grid(datasets, rounds: int = 15, agents: int = 20, seed: int = 0,
                    group_size: int = 4, model: str = "micro") -> list[ExperimentConfig]:
    """The runs behind docs/robustness.md: clean references, 30 % label flipping under the three
    privacy modes, a boosted backdoor, and the false-exclusion rate at Dirichlet alpha 0.1.
    Groups of 4 give 5 groups from 20 agents, enough for trimmed mean and Multi-Krum."""
    runs = []
    for ds in datasets:
        base = ExperimentConfig(dataset=ds, rounds=rounds, agents=agents, alpha=0.5, seed=seed,
                                group_size=group_size, model=model)
        for privacy in ("none", "grouped", "secagg"):
            runs.append(replace(base, privacy=privacy))
        lf = replace(base, attack="label-flip", fraction=0.3)
        runs += [replace(lf, privacy="none", defense=d) for d in NONE_DEFENSES]
        runs += [replace(lf, privacy="grouped", defense=d) for d in GROUPED_DEFENSES]
        runs.append(replace(lf, privacy="secagg"))
        runs.append(replace(lf, privacy="secagg", clip_norm=1.0, guard_margin=0.02))
        bd = replace(base, attack="backdoor", fraction=0.1)
        runs += [replace(bd, privacy="none", defense=d) for d in ("fedavg", "multi-krum", "median", "flame", "shap-mad")]
        runs += [replace(bd, privacy="grouped", defense=d) for d in ("fedavg", "median")]
        runs += [replace(bd, privacy="secagg"), replace(bd, privacy="secagg", clip_norm=1.0, guard_margin=0.02)]
        skew = replace(base, alpha=0.1)
        runs += [replace(skew, privacy="none", defense=d) for d in ("fedavg", "multi-krum", "flame", "shap", "shap-mad")]
        runs += [replace(skew, attack="label-flip", fraction=0.3, privacy="none", defense=d)
                 for d in ("fedavg", "multi-krum", "flame", "shap-mad")]
    return runs


def attack_suite_grid(datasets, rounds: int = 15, agents: int = 20, seed: int = 0,
                      group_size: int = 4, model: str = "micro") -> list[ExperimentConfig]:
    """The rest of the attack suite at 30 % (20 % for model-poisoning ALIE), a few defences each,
    and slow poisoning with and without cumulative drift tracking."""
    runs = []
    for ds in datasets:
        base = ExperimentConfig(dataset=ds, rounds=rounds, agents=agents, alpha=0.5, seed=seed,
                                group_size=group_size, model=model)
        for attack, fraction, defenses in (("sign-flip", 0.3, ("fedavg", "median", "multi-krum", "flame")),
                                           ("gaussian", 0.3, ("fedavg", "median", "multi-krum")),
                                           ("alie", 0.2, ("fedavg", "median", "multi-krum")),
                                           ("collude", 0.3, ("fedavg", "multi-krum", "flame"))):
            a = replace(base, attack=attack, fraction=fraction)
            runs += [replace(a, privacy="none", defense=d) for d in defenses]
            runs.append(replace(a, privacy="grouped", defense="median"))
        slow = replace(base, attack="slow-poison", fraction=0.3, privacy="none")
        runs += [slow, replace(slow, drift=True)]
    return runs


def grid(datasets, attacks, fractions, defenses, privacies, alphas, **common) -> list[ExperimentConfig]:
    """Every combination (attack none only with fraction 0, other attacks only with fraction > 0)."""
    runs = []
    for ds in datasets:
        for attack in attacks:
            for fraction in ([0.0] if attack == "none" else [f for f in fractions if f > 0]):
                for alpha in alphas:
                    for privacy in privacies:
                        for defense in defenses:
                            runs.append(ExperimentConfig(dataset=ds, attack=attack, fraction=fraction,
                                                         defense=defense, privacy=privacy, alpha=alpha, **common))
    return runs


def run_key(cfg: ExperimentConfig) -> str:
    return json.dumps(asdict(cfg), sort_keys=True)


def sweep(runs: list[ExperimentConfig], out_dir: str | Path, log=print) -> list[dict]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[json.dumps(rec["config"], sort_keys=True)] = rec
    results = []
    for k, cfg in enumerate(runs, 1):
        key = run_key(cfg)
        if key in done:
            results.append(done[key])
            continue
        try:
            rec = run_experiment(cfg)
        except RobustnessError as exc:
            rec = {"config": asdict(cfg), "refused": str(exc)}
        results.append(rec)
        with results_path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        log(f"[{k}/{len(runs)}] {label(cfg)}: " +
            (f"refused ({rec['refused']})" if "refused" in rec else
             f"acc {rec['final']['accuracy']:.4f} in {rec['seconds']:.0f} s"))
    (out / "table.md").write_text(table(results))
    plot(results, out)
    return results


def label(cfg) -> str:
    c = cfg if isinstance(cfg, dict) else asdict(cfg)
    extra = "".join([f" clip={c['clip_norm']}" if c.get("clip_norm") else "",
                     f" guard={c['guard_margin']}" if c.get("guard_margin") is not None else "",
                     " drift" if c.get("drift") else ""])
    return f"{c['dataset']} {c['attack']}@{c['fraction']:g} a={c['alpha']:g} {c['privacy']}/{c['defense']}{extra}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table(results: list[dict]) -> str:
    head = ("| dataset | attack | fraction | Dirichlet alpha | privacy | defense | accuracy % | last 3 rounds % | macro-F1 % | "
            "backdoor success % | backdoor, last 5 rounds % | honest excluded % | attackers excluded % | rounds | seconds |\n"
            "|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    for r in results:
        c = r["config"]
        defense = c["defense"] + "".join([f" + clip {c['clip_norm']:g}" if c.get("clip_norm") else "",
                                          f" + guard {c['guard_margin']:g}" if c.get("guard_margin") is not None else "",
                                          " + drift" if c.get("drift") else ""])
        lead = f"| {c['dataset']} | {c['attack']} | {c['fraction']:g} | {c['alpha']:g} | {c['privacy']} | {defense} |"
        if "refused" in r:
            rows.append(f"{lead} refused: {r['refused']} | | | | | | | {c['rounds']} | |")
            continue
        f = r["final"]
        # One round's accuracy moves by a few tenths: the mean of the last three is steadier.
        last3 = sum(x["accuracy"] for x in r["rounds"][-3:]) / len(r["rounds"][-3:])
        # Backdoor success swings between rounds under FedAvg: the last five rounds' mean too.
        asr5 = [x["attack_success"] for x in r["rounds"][-5:] if x["attack_success"] is not None]
        asr5 = sum(asr5) / len(asr5) if asr5 else None
        rows.append(f"{lead} {_pct(f['accuracy'])} | {_pct(last3)} | {_pct(f['macro_f1'])} | {_pct(f['attack_success'])} | {_pct(asr5)} | "
                    f"{_pct(f['honest_excluded_mean'])} | {_pct(f['malicious_excluded_mean'])} | "
                    f"{c['rounds']} | {r['seconds']:.0f} |")
    return head + "\n".join(rows) + "\n"


def plot(results: list[dict], out: Path) -> list[Path]:
    """One PNG per (dataset, attack, fraction, alpha): accuracy, macro-F1, backdoor success and
    honest exclusion per round, one line per privacy/defence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios: dict[tuple, list[dict]] = {}
    for r in results:
        if "refused" in r:
            continue
        c = r["config"]
        scenarios.setdefault((c["dataset"], c["attack"], c["fraction"], c["alpha"]), []).append(r)
    paths = []
    panels = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("attack_success", "backdoor success"),
              ("honest_excluded", "honest agents excluded"))
    for (ds, attack, fraction, alpha), runs in sorted(scenarios.items()):
        fig, axes = plt.subplots(1, 4, figsize=(18, 4))
        for r in runs:
            rounds = [x["round"] for x in r["rounds"]]
            name = label(r["config"]).split(" ", 3)[3]
            for ax, (key, _) in zip(axes, panels):
                ys = [x[key] for x in r["rounds"]]
                if any(y is not None for y in ys):
                    ax.plot(rounds, [float("nan") if y is None else y for y in ys], marker=".", label=name)
        for ax, (_, title) in zip(axes, panels):
            ax.set_title(title)
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{ds}: {attack} at {fraction:g}, Dirichlet alpha {alpha:g}")
        fig.tight_layout()
        path = out / f"plot-{ds}-{attack}-{fraction:g}-a{alpha:g}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths
