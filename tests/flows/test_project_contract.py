"""The method contract, over every project: each smoke config through the real flow, and broken projects refused.

One parametrized test over `discover()` replaces a copy of the same checks per project: the run registers a
model, reports the card's primary metric, the reference-result metrics and everything its config declares, and
the registered model loads back in its flavor. The runs share one workspace (a teacher registered by one
project's run is the upstream model of the next).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from contract_check import check_contract

from paperline.project.discovery import discover

REPO = Path(__file__).resolve().parents[2]
# Projects whose own flow test runs their smoke config and calls `check_contract` on it (one smoke run each).
OWN_FLOW_TEST = {"classical_baselines": "test_leaderboard_flow.py", "defsent_plus": "test_defsent_plus_flow.py",
                 "matryoshka_2d": "test_matryoshka_flow.py", "multicsr": "test_multicsr_flow.py",
                 "pixel_linguist": "test_pixel_linguist_flow.py", "uni_encoder": "test_uni_encoder_flow.py",
                 "visually_grounded": "test_visually_grounded_flow.py"}
PROJECTS = sorted(set(discover(REPO / "projects")) - set(OWN_FLOW_TEST))


@pytest.mark.parametrize("name", PROJECTS)
def test_every_project_satisfies_the_contract_through_the_flow(shared_workspace, name):
    check_contract(shared_workspace, name)


@pytest.mark.parametrize("name", sorted(OWN_FLOW_TEST))
def test_a_project_left_to_its_own_flow_test_is_checked_there(name):
    source = (Path(__file__).parent / OWN_FLOW_TEST[name]).read_text()
    assert f'check_contract(workspace, "{name}", result)' in source or \
        f'check_contract(ws, "{name}", result)' in source, f"{OWN_FLOW_TEST[name]} must call check_contract"


def test_a_scaffolded_project_runs_as_generated(shared_workspace):
    """`paperline new demo --from sbert_sts` then its smoke run registers a model; so does a bare template."""
    for args in (["demo", "--from", "sbert_sts"], ["fresh_method"]):
        made = shared_workspace.paperline("new", *args)
        assert made.returncode == 0, made.stderr
        assert (shared_workspace.root / "projects" / args[0] / "README.md").is_file()
        check_contract(shared_workspace, args[0])
    again = shared_workspace.paperline("new", "demo")
    assert again.returncode == 2 and "exists already" in again.stderr


def test_a_broken_project_is_listed_with_the_reason_and_refused_in_one_line(workspace):
    broken = workspace.root / "projects" / "broken"
    broken.mkdir()
    (broken / "project.yaml").write_text((REPO / "projects" / "sbert_sts" / "project.yaml").read_text()
                                         .replace("name: sbert_sts", "name: broken"))
    (broken / "configs").mkdir()
    (broken / "configs" / "default.yaml").write_text("train: {stages: [{name: s, dataset: stsb, loss: cosent}]}\n")
    method = (REPO / "projects" / "sbert_sts" / "method.py").read_text()
    (broken / "method.py").write_text(method.split("def evaluate(")[0])  # no evaluate
    listed = workspace.paperline("ls")
    assert listed.returncode == 0 and "BROKEN" in listed.stdout
    assert "broken: method.py has no `evaluate(model, cfg, data, ctx)`" in listed.stdout
    refused = workspace.paperline("run", "broken")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paperline: error: project 'broken' is broken: method.py has no")

    (broken / "method.py").write_text(method.replace("def evaluate(model: TrainedModel, cfg: Config",
                                                     "def evaluate(cfg: Config"))
    listed = workspace.paperline("ls")
    assert "`evaluate` takes (cfg, data, ctx), the contract is (model, cfg, data, ctx)" in listed.stdout
    assert "sbert_sts" in listed.stdout  # the sound projects are still listed and usable
