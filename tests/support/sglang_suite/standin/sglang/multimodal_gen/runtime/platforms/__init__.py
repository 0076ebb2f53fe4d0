"""Stand-in: the harness runs on a CPU host, so every accelerator probe (``is_cuda()``, ``is_hip()``...) is False."""


class _CpuPlatform:
    def is_cpu(self) -> bool:
        return True

    def __getattr__(self, name: str):
        if name.startswith("is_"):
            return lambda *args, **kwargs: False
        raise AttributeError(name)


current_platform = _CpuPlatform()
