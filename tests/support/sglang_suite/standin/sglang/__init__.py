"""Stand-in for the ``sglang`` package root: the real one imports SGLang's language runtime and GPU stack."""
