"""Stand-in for ``sglang.multimodal_gen``: only what SGLang's diffusion test harness imports, without torch."""
