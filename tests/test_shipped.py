"""A DiT sgld configured, run as diffusers ships it (``sgld.levers.shipped.as_shipped``): the yardstick of the
benchmarks' "diffusers" rows, which run diffusers' pipelines on sgld's component objects. Inside, no sgld class,
hook or attention backend is left and the outputs are the untouched DiT's; after, sgld's configuration is back."""

from __future__ import annotations

import copy

import pytest
import torch

from sgld.levers import fused_gelu
from sgld.levers.fused_gelu import FusedGELU
from sgld.levers.real_rope import RealRopeQwenProcessor, use_real_rope
from sgld.levers.shared_modulation import ModulationSlot, SharedModulation
from sgld.levers.shipped import as_shipped, sgld_classes
from sgld.levers.transformer_setup import configure_transformer
from sgld.run_config import run_config_from_options
from tests.support.tiny_dits import tiny_qwen_image_dit


def _classes(dit: torch.nn.Module) -> set[type]:
    """The classes of the DiT's modules and of their attention processors."""
    return {type(obj) for module in dit.modules() for obj in (module, getattr(module, "processor", None))}


def _backends(dit: torch.nn.Module) -> list:
    return [vars(module.processor).get("_attention_backend") for module in dit.modules() if hasattr(module, "processor")]


def _forward(dit: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return dit(hidden_states=torch.randn(1, 16, 16, generator=generator), timestep=torch.tensor([0.7]),
                   encoder_hidden_states=torch.randn(1, 5, 24, generator=generator),
                   encoder_hidden_states_mask=torch.ones(1, 5, dtype=torch.long), img_shapes=[[(1, 4, 4)]],
                   return_dict=False)[0]


def test_a_configured_dit_runs_as_diffusers_ships_it_inside_and_as_sgld_configured_it_after(monkeypatch):
    monkeypatch.setattr(fused_gelu, "FUSED_DEVICES", ("cuda", "cpu"))  # the CUDA-only swap, installed here too
    reference = tiny_qwen_image_dit()
    dit = copy.deepcopy(reference)
    use_real_rope(dit)
    setup = configure_transformer(dit, run_config_from_options({"model_path": "tiny-qwen-image"}), torch.device("cpu"))
    dit.set_attention_backend("_native_math")
    hook = next(h for h in setup.hooks if isinstance(h, SharedModulation))
    configured, backends = _classes(dit), _backends(dit)
    assert {FusedGELU, ModulationSlot, RealRopeQwenProcessor} <= configured and backends[0] is not None

    with as_shipped(dit) as swapped:
        assert swapped == 2 * (2 + 1 + 2)  # 2 blocks: img_mod and txt_mod, the processor, two feed-forward GELUs
        assert not _classes(dit) & set(sgld_classes()) and _classes(dit) == _classes(reference)
        assert _backends(dit) == _backends(reference)
        computed = hook.computed
        assert torch.equal(_forward(dit), _forward(reference))
        assert hook.computed == computed  # the shared-modulation hook did not run

    assert _classes(dit) == configured and _backends(dit) == backends
    assert torch.equal(_forward(dit), _forward(reference))
    assert hook.computed == computed + 1


def test_a_module_of_sgld_with_no_diffusers_class_to_stand_for_is_refused_and_nothing_stays_swapped(monkeypatch):
    """FP8 layers replace modules (no class to swap back): a reference run on them would not be diffusers'."""
    from sgld.levers.fp8 import quantize_blocks_fp8

    monkeypatch.setattr(fused_gelu, "FUSED_DEVICES", ("cuda", "cpu"))
    dit = tiny_qwen_image_dit()
    fused_gelu.fuse_gelu_projections(dit, torch.device("cpu"))
    quantize_blocks_fp8(dit, torch.device("cpu"))
    before = _classes(dit)
    with pytest.raises(RuntimeError, match=r"sgld's sgld\.levers\.fp8\.Fp8Linear .*measure the reference before them"):
        with as_shipped(dit):
            pass
    assert _classes(dit) == before
