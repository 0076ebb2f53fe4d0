"""Running SGLang's own diffusion server and CLI tests against sgld (``tests/test_sglang_suite.py``).

``wheel``: the pinned SGLang wheel, fetched at test time, and the import root built from it; ``standin/``: the
few SGLang modules its harness imports, without a GPU stack; ``cases``: the substitutions (tiny models, small
sizes, local inputs and adapters) and the one list of expected failures; ``inputs``: the local input images;
``flags``: SGLang's command-line flags read from the wheel.
"""
