"""`cj-run dry-run`: the request envelope of a batch, written as JSON; no judge call.

A panel's envelope names the judge of every first-wave prompt (the pairs asked of two
judges on purpose appear twice, once per judge) and renders each prompt with that judge's
own template; ``panel`` lists every member with its prompt hash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cj_runner.core.models import Mode
from cj_runner.judges.base import EssayText, JudgeRequest
from cj_runner.judges.panel import member_of
from cj_runner.judges.prompts import PromptTemplate, render_prompt
from cj_runner.judges.registry import judge_prompt_template
from cj_runner.services.batches import PreparedBatch, judge_record
from cj_runner.services.workflow_setup import batch_workflow

ENVELOPE_FILE = "envelope.json"


def first_wave_plan(prepared: PreparedBatch, seed: int) -> list[tuple[int, int, Mode, int | None]]:
    """The first wave as a real run plans it (the workflow's own planning): each ordered
    pair with its mode and, for a panel, its planned judge (``None``: the seeded choice)."""
    wf = batch_workflow(
        prepared.settings,
        prepared.nodes,
        seed=seed,
        total_budget=prepared.total_budget,
        grade_scale=prepared.grade_scale,
        judge=prepared.judge_config,
    )
    pairs = wf.plan_wave(1)
    return [
        (p.a, p.b, mode, judge)
        for p, mode, judge in zip(pairs, wf.wave_modes, wf.wave_judges, strict=True)
    ]


def first_wave(prepared: PreparedBatch, seed: int) -> list[tuple[int, int]]:
    """The ordered pairs the first wave would ask (same selection as a real run)."""
    return [(a, b) for a, b, _, _ in first_wave_plan(prepared, seed)]


def build_envelope(prepared: PreparedBatch, plan: dict[str, Any]) -> dict[str, Any]:
    """Batch settings, nodes and first-wave prompts (API keys are never included)."""
    settings = prepared.settings.model_dump(mode="json")
    seed = prepared.settings.SEED if prepared.settings.SEED is not None else 0
    settings["SEED"] = seed
    config = prepared.judge_config
    template = judge_prompt_template(config)
    templates: dict[str, PromptTemplate] = {
        m.judge.name: judge_prompt_template(m.judge) for m in config.panel
    }
    names = [m.judge.name for m in config.panel]
    nodes = prepared.nodes
    texts = [
        EssayText(n.essay_id, n.text, n.checksum, n.is_anchor, n.known_grade, n.metadata)
        for n in nodes
    ]
    prompts = []
    for a, b, mode, planned in first_wave_plan(prepared, seed):
        request = JudgeRequest(
            essay_a=texts[a], essay_b=texts[b], assignment=prepared.assignment_text
        )
        prompt: dict[str, Any] = {
            "essay_a": nodes[a].essay_id,
            "essay_b": nodes[b].essay_id,
            "mode": mode.value,
            "wave": 1,
        }
        used = template
        if config.panel:
            judge = (
                names[planned]
                if planned is not None
                else member_of(config, texts[a].checksum, texts[b].checksum, 0)
            )
            prompt["judge"] = judge
            used = templates[judge]
        system, user = render_prompt(used, request)
        prompts.append({**prompt, "system": system, "user": user})
    envelope: dict[str, Any] = {
        "batch_name": prepared.request.batch_name,
        "plan": plan,
        "settings": settings,
        "judge": judge_record(config),
        "prompt_hash": template.hash,
    }
    if config.panel:
        envelope["panel"] = [
            {
                "judge": m.judge.name,
                "kind": m.judge.kind,
                "model": m.judge.model,
                "share": m.share,
                "prompt_hash": templates[m.judge.name].hash,
            }
            for m in config.panel
        ]
    return {
        **envelope,
        "nodes": [
            {
                "index": i,
                "essay_id": n.essay_id,
                "is_anchor": n.is_anchor,
                "known_grade": n.known_grade,
                "checksum": n.checksum,
                "metadata": n.metadata,
            }
            for i, n in enumerate(nodes)
        ],
        "first_wave": prompts,
    }


def write_envelope(prepared: PreparedBatch, plan: dict[str, Any], output_dir: Path) -> Path:
    """Write the envelope to ``output_dir/envelope.json``; returns the path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / ENVELOPE_FILE
    path.write_text(
        json.dumps(build_envelope(prepared, plan), indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return path
