"""`cj-run dry-run`: the request envelope of a batch, written as JSON; no judge call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cj_runner.core.models import Mode
from cj_runner.core.pairing import PairingState, select_pairs
from cj_runner.judges.base import EssayText, JudgeRequest
from cj_runner.judges.prompts import render_prompt
from cj_runner.judges.registry import judge_prompt_template
from cj_runner.services.batches import PreparedBatch, judge_record

ENVELOPE_FILE = "envelope.json"


def first_wave(prepared: PreparedBatch, seed: int) -> list[tuple[int, int]]:
    """The ordered pairs the first wave would ask (same selection as a real run)."""
    n = len(prepared.nodes)
    state = PairingState(
        n_nodes=n,
        scores=np.zeros(n),
        a_counts=np.zeros(n, dtype=np.int64),
        b_counts=np.zeros(n, dtype=np.int64),
        orientation_counts={},
    )
    settings = prepared.settings
    size = min(settings.COMPARISONS_PER_STABILITY_CHECK_ITERATION, prepared.total_budget)
    rng = np.random.default_rng([seed, 1])
    pairs = select_pairs(state, Mode.COVERAGE, size, rng, strategy=settings.MATCHING_STRATEGY)
    return [(p.a, p.b) for p in pairs]


def build_envelope(prepared: PreparedBatch, plan: dict[str, Any]) -> dict[str, Any]:
    """Batch settings, nodes and first-wave prompts (API keys are never included)."""
    settings = prepared.settings.model_dump(mode="json")
    seed = prepared.settings.SEED if prepared.settings.SEED is not None else 0
    settings["SEED"] = seed
    template = judge_prompt_template(prepared.judge_config)
    nodes = prepared.nodes
    texts = [
        EssayText(n.essay_id, n.text, n.checksum, n.is_anchor, n.known_grade, n.metadata)
        for n in nodes
    ]
    prompts = []
    for a, b in first_wave(prepared, seed):
        system, user = render_prompt(
            template,
            JudgeRequest(essay_a=texts[a], essay_b=texts[b], assignment=prepared.assignment_text),
        )
        prompts.append(
            {
                "essay_a": nodes[a].essay_id,
                "essay_b": nodes[b].essay_id,
                "mode": Mode.COVERAGE.value,
                "wave": 1,
                "system": system,
                "user": user,
            }
        )
    return {
        "batch_name": prepared.request.batch_name,
        "plan": plan,
        "settings": settings,
        "judge": judge_record(prepared.judge_config),
        "prompt_hash": template.hash,
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
