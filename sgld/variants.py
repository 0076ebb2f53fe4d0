"""The model variants sgld knows by name: one row each, the single table the built-in names are read from.

A row says what ``--model-path`` may name (a built-in tiny model or a released repo id), its
``conf/model`` file (defaults), its family (``sgld.families.FAMILIES``), how sgld builds it offline
(tiny models) and whether ``random:<repo id>`` gives its full-size architecture with random weights
(the configs live in ``sgld/model_builders/full_size.py``, keyed by the same repo id).
``tests/test_variants.py`` holds every row to the conf file, the family table, the builders and the
full-size configs. Builders are named as ``"module:function"`` and imported only when a folder is
built, so reading this table imports neither torch nor diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelVariant:
    """One model sgld knows by name."""

    name: str  # what --model-path takes: a tiny model's built-in name or the released repo id
    conf: str  # its conf/model/<conf>.yaml (sampling defaults, precision)
    family: str  # its key in sgld.families.FAMILIES
    # Tiny models: "module:function" that writes the folder, and the keyword arguments it takes.
    builder: str | None = None
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    full_size: bool = False  # random:<name> builds the released architecture (sgld/model_builders/full_size.py)

    @property
    def tiny(self) -> bool:
        """Whether sgld builds this model itself, offline (a built-in name)."""
        return self.builder is not None

    def build(self, folder: Any) -> None:
        """Write this tiny model into ``folder`` (its builder is imported now, not when the table is read)."""
        import importlib

        module, function = self.builder.split(":")
        getattr(importlib.import_module(module), function)(folder, **self.builder_kwargs)


_TINY = "sgld.model_builders.tiny"


def _tiny(name: str, conf: str, family: str, builder: str, **kwargs: Any) -> ModelVariant:
    return ModelVariant(name, conf, family, builder=builder, builder_kwargs=kwargs)


VARIANTS: tuple[ModelVariant, ...] = (
    # Tiny random-weight models, built offline on first use (tests, the demo).
    _tiny("tiny-wan-t2v", "tiny_wan", "wan_t2v", f"{_TINY}:build_tiny_wan", two_experts=False),
    _tiny("tiny-wan22-t2v", "tiny_wan22", "wan_t2v", f"{_TINY}:build_tiny_wan", two_experts=True),
    _tiny("tiny-wan22-ti2v", "tiny_wan22_ti2v", "wan_ti2v", f"{_TINY}:build_tiny_wan", two_experts=False, ti2v=True),
    _tiny("tiny-wan21-i2v", "tiny_wan21_i2v", "wan_i2v", f"{_TINY}:build_tiny_wan", two_experts=False, i2v=True),
    _tiny("tiny-wan22-i2v", "tiny_wan22_i2v", "wan_i2v", f"{_TINY}:build_tiny_wan", two_experts=True, i2v=True),
    _tiny("tiny-flux", "tiny_flux", "flux", f"{_TINY}:build_tiny_flux"),
    _tiny("tiny-hunyuan", "tiny_hunyuan", "hunyuan", "sgld.model_builders.tiny_hunyuan:build_tiny_hunyuan"),
    _tiny("tiny-qwen-image", "tiny_qwen_image", "qwen_image", "sgld.model_builders.tiny_qwen:build_tiny_qwen_image"),
    _tiny("tiny-qwen-image-edit", "tiny_qwen_image_edit", "qwen_image_edit",
          "sgld.model_builders.tiny_qwen:build_tiny_qwen_image_edit"),
    _tiny("tiny-qwen-image-edit-plus", "tiny_qwen_image_edit_plus", "qwen_image_edit_plus",
          "sgld.model_builders.tiny_qwen:build_tiny_qwen_image_edit_plus"),
    _tiny("tiny-z-image", "tiny_z_image", "z_image", "sgld.model_builders.tiny_z_image:build_tiny_z_image"),
    _tiny("tiny-flux2-klein", "tiny_flux2_klein", "flux2_klein", "sgld.model_builders.tiny_flux2:build_tiny_flux2_klein"),
    _tiny("tiny-flux2", "tiny_flux2", "flux2_dev", "sgld.model_builders.tiny_flux2:build_tiny_flux2_dev"),
    _tiny("tiny-hunyuan15", "tiny_hunyuan15", "hunyuan15_t2v", "sgld.model_builders.tiny_hunyuan15:build_tiny_hunyuan15_t2v"),
    _tiny("tiny-hunyuan15-i2v", "tiny_hunyuan15_i2v", "hunyuan15_i2v",
          "sgld.model_builders.tiny_hunyuan15:build_tiny_hunyuan15_i2v"),
    _tiny("tiny-ltx2", "tiny_ltx2", "ltx2", "sgld.model_builders.tiny_ltx2:build_tiny_ltx2"),
    _tiny("tiny-minimax-h3", "tiny_minimax_h3", "minimax_h3", "sgld.model_builders.tiny_minimax_h3:build_tiny_minimax_h3"),
    # Released models: their repo id (downloaded, or from the Hugging Face cache), and random:<id> where marked.
    ModelVariant("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "wan21", "wan_t2v", full_size=True),
    ModelVariant("Wan-AI/Wan2.1-T2V-14B-Diffusers", "wan21_14b", "wan_t2v", full_size=True),
    ModelVariant("Wan-AI/Wan2.2-T2V-A14B-Diffusers", "wan22", "wan_t2v", full_size=True),
    ModelVariant("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "wan22_ti2v", "wan_ti2v"),
    ModelVariant("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "wan21_i2v", "wan_i2v"),
    ModelVariant("Wan-AI/Wan2.2-I2V-A14B-Diffusers", "wan22_i2v", "wan_i2v"),
    ModelVariant("hunyuanvideo-community/HunyuanVideo", "hunyuan", "hunyuan"),
    ModelVariant("FastVideo/FastHunyuan-diffusers", "fasthunyuan", "hunyuan"),
    ModelVariant("hunyuanvideo-community/HunyuanVideo-1.5-480p_t2v", "hunyuan15_t2v", "hunyuan15_t2v", full_size=True),
    ModelVariant("hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v", "hunyuan15_i2v", "hunyuan15_i2v", full_size=True),
    ModelVariant("black-forest-labs/FLUX.1-dev", "flux_dev", "flux", full_size=True),
    ModelVariant("black-forest-labs/FLUX.1-schnell", "flux_schnell", "flux"),
    ModelVariant("black-forest-labs/FLUX.2-klein-4B", "flux2_klein", "flux2_klein", full_size=True),
    ModelVariant("black-forest-labs/FLUX.2-dev", "flux2_dev", "flux2_dev", full_size=True),
    ModelVariant("Tongyi-MAI/Z-Image-Turbo", "z_image_turbo", "z_image", full_size=True),
    ModelVariant("Qwen/Qwen-Image", "qwen_image", "qwen_image", full_size=True),
    ModelVariant("Qwen/Qwen-Image-Edit", "qwen_image_edit", "qwen_image_edit", full_size=True),
    ModelVariant("Qwen/Qwen-Image-Edit-2509", "qwen_image_edit_2509", "qwen_image_edit_plus", full_size=True),
    ModelVariant("Lightricks/LTX-2", "ltx2", "ltx2", full_size=True),
    ModelVariant("MiniMaxAI/MiniMax-H3", "minimax_h3", "minimax_h3", full_size=True),
)

VARIANTS_BY_NAME: dict[str, ModelVariant] = {variant.name: variant for variant in VARIANTS}
# The built-in names (models sgld builds offline) and the conf/model file of each.
BUILTIN_MODELS: dict[str, str] = {variant.name: variant.conf for variant in VARIANTS if variant.tiny}
