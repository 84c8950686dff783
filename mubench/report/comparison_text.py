"""A comparison (``mubench compare``'s JSON object) as a Markdown or LaTeX table with its footnotes."""
from __future__ import annotations

from typing import Any, Optional

from .render import latex_escape
from .table import auto_format


def _num(x: Optional[float], ref: Optional[float] = None) -> str:
    if x is None:
        return "–"
    return format(x, auto_format(abs(ref) if ref is not None else x))


def _p(p: Optional[float]) -> str:
    return "–" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _verdict(m: dict[str, Any], a: str, b: str) -> str:
    if m["p"] is None:
        return "not tested"
    if not m.get("testable", True):
        return "too few prompts to test"
    if not m["significant"]:
        return "no significant difference"
    return f"{b if m['better'] == 'b' else a} better"


def side_names(cmp: dict[str, Any]) -> tuple[str, str]:
    """What the verdict calls each side: its label, or its method where the label is a run id (``compare RUN RUN``),
    with the seed where both sides are one method."""
    names = []
    for side in (cmp["a"], cmp["b"]):
        label = str(side["label"])
        names.append(side.get("method") or label if label in (side.get("run_ids") or []) else label)
    if names[0] == names[1]:
        names = [f"{n} (seed {side.get('seeds')})" for n, side in zip(names, (cmp["a"], cmp["b"]))]
    return names[0], names[1]


def _rows(cmp: dict[str, Any]) -> list[list[str]]:
    a, b = side_names(cmp)
    rows = []
    for m in cmp["metrics"]:
        ref = max(abs(m["a"] or 0), abs(m["b"] or 0)) or None
        ci = f"[{_num(m['ci_low'], ref)}, {_num(m['ci_high'], ref)}]" if m["ci_low"] is not None else "–"
        rows.append([f"{m['metric']} {'↑' if m['higher_is_better'] else '↓'}", _num(m["a"], ref), _num(m["b"], ref),
                     (("+" if (m["delta"] or 0) > 0 else "") + _num(m["delta"], ref)) if m["delta"] is not None else "–",
                     ci, _p(m["p"]), _p(m["p_holm"]), str(m["units"]), _verdict(m, a, b)])
    return rows


def footnotes(cmp: dict[str, Any]) -> list[str]:
    noise = "shared (same image seeds)" if cmp["shared_noise"] else "not shared (different seeds)"
    out = [f"A = {_side(cmp['a'])}; B = {_side(cmp['b'])}.",
           f"{cmp['units']} paired units (prompt, image, replicate), {cmp['dropped']} dropped (not on both sides); "
           f"initial noise {noise}.",
           f"Δ = B − A. CI: {cmp['test']['ci']}. p: {cmp['test']['p']}; p_holm: {cmp['correction']}; "
           f"significant at alpha {cmp['alpha']}."]
    if cmp.get("same_runs"):
        out.append("A and B are the same runs: every Δ is 0 by construction (pass run ids or methods that differ).")
    if cmp.get("protocol_differences"):
        out.append("Compared with --force although the protocols differ: " + "; ".join(cmp["protocol_differences"]))
    notes = sorted({m["note"] for m in cmp["metrics"] if m.get("note")})
    out += notes
    return out


def _side(s: dict[str, Any]) -> str:
    runs = s["run_ids"]
    what = f"{s['method']} on {s['suite']}"
    if s.get("seeds_missing"):
        have = s["seeds"] if isinstance(s["seeds"], list) else [s["seeds"]]
        return (f"{what}, replicate group with {len(runs)} of {len(runs) + len(s['seeds_missing'])} runs (seeds "
                f"{have}; {', '.join(map(str, s['seeds_missing']))} never finished)")
    if len(runs) > 1:
        return f"{what}, {len(runs)} replicates (seeds {s['seeds']})"
    return f"{what}, run {runs[0][:12]} (seed {s['seeds']})"


HEADER = ["metric", "A", "B", "Δ (B − A)", "95% CI of Δ", "p", "p (Holm)", "units", "verdict"]


def comparison_markdown(cmp: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|:---|" + "---:|" * (len(HEADER) - 2) + ":---|"]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(cmp)]
    lines.append("")
    lines += [f"- {f}" for f in footnotes(cmp)]
    return "\n".join(lines) + "\n"


def comparison_latex(cmp: dict[str, Any]) -> str:
    cols = "l" + "r" * (len(HEADER) - 2) + "l"
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in HEADER) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in _rows(cmp)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"{\footnotesize"]
    lines += [latex_escape(f) + r"\par" for f in footnotes(cmp)]
    lines += ["}", r"\end{table}"]
    return "\n".join(lines) + "\n"


__all__ = ["comparison_markdown", "comparison_latex", "footnotes"]
