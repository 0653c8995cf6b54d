"""The profile as Markdown and HTML tables: summary per upstream, per resolution and per block."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

# ---------------------------------------------------------------------------------------------------------------
# Tables


def _fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _summary_rows(profile: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    ratios = {c["upstream"]: c for c in profile.get("comparisons", [])}
    reference = profile.get("reference")
    header = [
        "upstream",
        "weights",
        "resolutions (ms)",
        "params (M)",
        "GFLOPs per s audio",
        "CPU ms per s audio",
        "peak MB per s audio",
        "FLOPs vs reference",
        "latency vs reference",
    ]
    rows = []
    for entry in profile["upstreams"]:
        total = entry["total"]
        ratio = ratios.get(entry["name"])
        rows.append(
            [
                entry["name"],
                entry["weights"],
                "/".join(_fmt_ms(r) for r in entry.get("architecture", {}).get("resolutions_ms", [])) or "—",
                f"{total['params'] / 1e6:.2f}",
                f"{total['flops_per_second'] / 1e9:.3g}",
                f"{1000 * total['latency_per_second']:.1f}",
                f"{total['peak_memory_per_second'] / 2**20:.1f}",
                "1 (reference)" if entry["name"] == reference else (f"{ratio['flops_ratio']:.3f}" if ratio else "—"),
                "1 (reference)"
                if entry["name"] == reference
                else (f"{ratio['latency_s_ratio']:.3f}" if ratio else "—"),
            ]
        )
    return header, rows


def _resolution_rows(profile: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "upstream",
        "resolution (ms)",
        "blocks",
        "params (M)",
        "GFLOPs per s audio",
        "share of FLOPs",
        "CPU ms per s audio",
    ]
    rows = []
    seconds = float(profile["seconds"])
    for entry in profile["upstreams"]:
        total_flops = entry["total"]["flops"] or 1
        for group in entry["resolutions"]:
            rows.append(
                [
                    entry["name"],
                    _fmt_ms(group["resolution_ms"]),
                    ", ".join(group["blocks"]),
                    f"{group['params'] / 1e6:.2f}",
                    f"{group['flops'] / seconds / 1e9:.3g}",
                    f"{100 * group['flops'] / total_flops:.1f} %",
                    f"{1000 * group['latency_s'] / seconds:.1f}",
                ]
            )
    return header, rows


def _block_rows(profile: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "upstream",
        "block",
        "resolution (ms)",
        "params (M)",
        "GFLOPs per s audio",
        "CPU ms per s audio",
        "peak MB (clip)",
    ]
    rows = []
    seconds = float(profile["seconds"])
    for entry in profile["upstreams"]:
        for block in entry["blocks"]:
            memory = block.get("peak_memory_bytes")
            rows.append(
                [
                    entry["name"],
                    block["name"],
                    _fmt_ms(block["resolution_ms"]),
                    f"{block['params'] / 1e6:.2f}",
                    f"{block['flops'] / seconds / 1e9:.3g}",
                    f"{1000 * block['latency_s'] / seconds:.2f}",
                    "—" if memory is None else f"{memory / 2**20:.1f}",
                ]
            )
    return header, rows


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _settings_line(profile: Mapping[str, Any]) -> str:
    return (
        f"One {profile['seconds']:g} s clip, batch 1, CPU, {profile['threads']} thread(s), median of "
        f"{profile['repeats']} runs (upstreams timed in turns); torch {profile['versions']['torch']}. "
        f"FLOPs: {profile['flop_counter']}. Peak memory: live tensors created by the forward pass "
        f"(weights excluded). Ratios are against the reference, {profile.get('reference')}."
    )


def profile_markdown(profile: Mapping[str, Any], blocks: bool = True) -> str:
    """The profile as Markdown: a summary per upstream, then per resolution, then (optionally) per block."""
    lines = ["## Efficiency profile", "", _settings_line(profile), ""]
    lines += _markdown_table(*_summary_rows(profile))
    lines += ["", "### Per resolution", "", *_markdown_table(*_resolution_rows(profile))]
    if blocks:
        lines += ["", "### Per block", "", *_markdown_table(*_block_rows(profile))]
    return "\n".join(lines) + "\n"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], table_id: str) -> str:

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def profile_html(profile: Mapping[str, Any]) -> str:
    """The profile tables as an HTML fragment (for the leaderboard page)."""

    return "\n".join(
        [
            f'<p class="note">{html.escape(_settings_line(profile))}</p>',
            _html_table(*_summary_rows(profile), "profile-summary"),
            "<h3>Per resolution</h3>",
            _html_table(*_resolution_rows(profile), "profile-resolutions"),
            "<h3>Per block</h3>",
            _html_table(*_block_rows(profile), "profile-blocks"),
        ]
    )
