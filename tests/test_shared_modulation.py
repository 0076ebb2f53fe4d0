"""Qwen-Image's block modulations computed once a step for both guidance branches (``sgld.levers.shared_modulation``):
the DiT's outputs equal the unchanged DiT's, eager and compiled, step after step; the second branch of a step
reuses, a new step or request computes. The pipeline-level equality with diffusers is tests/test_families.py's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from sgld.levers.shared_modulation import ModulationSlot, SharedModulation, shared_modulation_hook
from sgld.run_config import run_config_from_options
from tests.support.tiny_dits import tiny_qwen_image_dit

HEIGHT, WIDTH = 4, 4  # latent patches


def _branch(seed: int, text_len: int) -> dict:
    """One guidance branch's text inputs (the two branches' prompts differ in length, as true CFG's do)."""
    generator = torch.Generator().manual_seed(seed)
    return dict(encoder_hidden_states=torch.randn(1, text_len, 24, generator=generator),
                encoder_hidden_states_mask=torch.ones(1, text_len, dtype=torch.long))


def _forward(dit, latents, timestep, branch, images: int = 1):
    shapes = [[(1, HEIGHT, WIDTH)] * images]
    return dit(hidden_states=latents, timestep=timestep, img_shapes=shapes, return_dict=False, **branch)[0]


def _steps(dit, hook: SharedModulation | None, images: int = 1) -> list[torch.Tensor]:
    """Two steps of two branches each (the loop's order: cond, then uncond, on one timestep tensor)."""
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(1, HEIGHT * WIDTH * images, 16, generator=generator)
    cond, uncond = _branch(2, 5), _branch(3, 3)
    outputs = []
    with torch.no_grad():
        for step, t in enumerate((0.9, 0.4)):
            timestep = torch.tensor([t])
            for name, branch in (("cond", cond), ("uncond", uncond)):
                if hook is None:
                    outputs.append(_forward(dit, latents, timestep, branch, images))
                else:
                    with hook.around_forward(name, step):
                        outputs.append(_forward(dit, latents, timestep, branch, images))
    return outputs


@pytest.mark.parametrize("zero_cond_t", [False, True])
def test_outputs_equal_the_unchanged_dit_and_each_step_computes_once(zero_cond_t):
    reference = tiny_qwen_image_dit(zero_cond_t=zero_cond_t)
    dit = copy.deepcopy(reference)
    hook = SharedModulation(dit)
    images = 2 if zero_cond_t else 1  # Qwen-Image-Edit-2511's zero_cond_t: a condition image after the target
    hook.start(None)
    got, want = _steps(dit, hook, images), _steps(reference, None, images)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert (hook.computed, hook.reused) == (2, 2)
    assert dit.state_dict().keys() == reference.state_dict().keys()  # LoRA and checkpoint names unchanged

    hook.start(None)  # a new request's step 0 computes again
    _steps(dit, hook, images)
    assert (hook.computed, hook.reused) == (4, 4)

    with torch.no_grad():  # outside the loop (no step given) every forward computes
        _forward(dit, torch.randn(1, HEIGHT * WIDTH * images, 16), torch.tensor([0.5]), _branch(4, 2), images)
    assert hook.computed == 5
    hook.remove()
    assert all(block.img_mod.value is None for block in dit.transformer_blocks)


def test_compiled_blocks_read_each_steps_values():
    """The stored values are inputs of the compiled blocks, not constants baked in at the first compile."""
    reference = tiny_qwen_image_dit()
    dit = copy.deepcopy(reference)
    hook = SharedModulation(dit)
    torch._dynamo.reset()
    dit.compile_repeated_blocks(fullgraph=True)
    try:
        hook.start(None)
        got, want = _steps(dit, hook), _steps(reference, None)
        graphs = counters["stats"]["unique_graphs"]
        hook.start(None)
        _steps(dit, hook)  # new values each step: no recompile (the values are inputs, guarded on shape)
        assert counters["stats"]["unique_graphs"] == graphs
    finally:
        torch._dynamo.reset()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got[0], got[2])  # the two steps differ, and each matched its own reference
    assert (hook.computed, hook.reused) == (4, 4)


def test_installed_on_qwen_image_only_and_not_with_cuda_graphs_or_layerwise_offload():
    run = run_config_from_options({"model_path": "random:Qwen/Qwen-Image"})
    dit = tiny_qwen_image_dit()
    assert isinstance(shared_modulation_hook(dit, run), SharedModulation)
    assert isinstance(dit.transformer_blocks[0].img_mod, ModulationSlot)
    for override in ("model.cuda_graphs=true", "offload.dit=layerwise"):
        changed = run_config_from_options({"model_path": "random:Qwen/Qwen-Image"}, [override])
        assert shared_modulation_hook(tiny_qwen_image_dit(), changed) is None
    assert shared_modulation_hook(torch.nn.Linear(2, 2), run) is None
