"""The sampler race's lanes follow the model (demos.denoising_viewer_experiments.race_lanes): a flow-matching model
gets the flow samplers, an ε/v model the VP ones, and lanes already valid for the model are left alone."""

from __future__ import annotations

import gradio as gr
import pytest

from demos import denoising_viewer_experiments as exp
from pipelines.models import DEFAULT_DIFFUSION_SPECS, FLOW_SAMPLERS, SAMPLERS
from pipelines.runtime import Runtime

SD3 = "toy-sd3 (bundled, 64 px, latent)"


@pytest.fixture(scope="module")
def runtime():
    return Runtime.create("cpu")  # nothing loads: flow_only reads the spec's kind


def test_choosing_toy_sd3_switches_the_lanes_to_flow_samplers_and_back(runtime):
    vp_lanes = [s for s, _, _ in exp.RACE_LANES]
    out = exp.race_lanes(runtime, SD3, *vp_lanes)
    assert len(out) == 12
    samplers = [u.value for u in out[1::3]]
    assert samplers == [s for s, _, _ in exp.FLOW_RACE_LANES] and all(s in FLOW_SAMPLERS for s in samplers)
    assert all([c[1] for c in u.choices] == list(FLOW_SAMPLERS) for u in out[1::3])
    assert [u.value for u in out[2::3]] == [n for _, n, _ in exp.FLOW_RACE_LANES]
    # flow lanes stay on a flow model; back on toy-sd they become the VP lanes again
    assert exp.race_lanes(runtime, SD3, *samplers) == [gr.skip()] * 12
    back = exp.race_lanes(runtime, DEFAULT_DIFFUSION_SPECS[0].name, *samplers)
    assert [u.value for u in back[1::3]] == vp_lanes and all(s in SAMPLERS for s in vp_lanes)
    assert exp.race_lanes(runtime, DEFAULT_DIFFUSION_SPECS[0].name, *vp_lanes) == [gr.skip()] * 12
