"""sgld against diffusers on the same random full-size weights, in one process, on one GPU.

    python bench/speed.py --out results.json [--workloads wan13,flux,qwen] [--steps 3]

For each workload the model is made once (``random:<repo-id>``: weights created on the GPU)
and shared: the diffusers reference pipeline is built from sgld's own component objects,
runs first with the modules untouched ("diffusers"), then tuned by hand as a user would
("diffusers tuned": ``set_attention_backend`` with the best exact backend installed, FA3
where present, and ``compile_repeated_blocks(fullgraph=True)``), then sgld runs with its
defaults and with each speed lever. Every figure comes from this run: s/step (median step interval, the GPU
synchronised at step ends in both), DiT forward time per CFG branch (CUDA events around
the transformer's forward), MFU against the bf16 matmul rate measured here, text-encode
and VAE-decode time, end-to-end time of ``--steps`` steps and its explicit extrapolation
to the model's full step count, and peak GPU memory. Lossy levers report PSNR of the
output against sgld's lossless output.

``--tiny`` runs the same code on the tiny built-in models on the CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgld.levers.shipped import components_as_shipped  # noqa: E402

PROMPT = "A red fox runs through fresh snow at dawn, cinematic, detailed fur, slow motion"
NEGATIVE = "blurry, low quality"


@dataclass
class Workload:
    """One model at one size, as the issue's table names it."""

    key: str
    repo: str
    tiny: str
    reference: str  # diffusers pipeline class
    height: int
    width: int
    frames: int
    steps: int  # the model's full step count (extrapolated to)
    guidance: float
    true_cfg: bool = False  # Qwen-Image: guidance is true CFG (two branches)
    guider: bool = False  # HunyuanVideo-1.5: the reference takes its CFG scale from its guider component
    # sgld options for the run; FLUX's reference decodes in the transformer's dtype ("match": the DiT precision).
    sgld_options: dict = field(default_factory=dict)


WORKLOADS = {
    "wan13": Workload("wan13", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "tiny-wan-t2v", "WanPipeline", 480, 832, 81, 50, 5.0),
    "flux": Workload("flux", "black-forest-labs/FLUX.1-dev", "tiny-flux", "FluxPipeline", 1024, 1024, 1, 28, 3.5,
                     sgld_options={"vae_precision": "match"}),
    "qwen": Workload("qwen", "Qwen/Qwen-Image", "tiny-qwen-image", "QwenImagePipeline", 1024, 1024, 1, 50, 4.0,
                     true_cfg=True),
    # FLUX.2 [klein] 4B: step-distilled, 4 steps, no guidance.
    "klein": Workload("klein", "black-forest-labs/FLUX.2-klein-4B", "tiny-flux2-klein", "Flux2KleinPipeline", 1024, 1024,
                      1, 4, 1.0, sgld_options={"vae_precision": "match"}),
    # Z-Image-Turbo: 9 steps, guidance off (one branch), as its model card runs it.
    "zimage": Workload("zimage", "Tongyi-MAI/Z-Image-Turbo", "tiny-z-image", "ZImagePipeline", 1024, 1024, 1, 9, 0.0,
                       sgld_options={"vae_precision": "match"}),
    # HunyuanVideo-1.5 480p T2V, a 61-frame clip (16 latent frames, 25,440 video tokens), CFG 6.0, 50 steps.
    "hv15": Workload("hv15", "hunyuanvideo-community/HunyuanVideo-1.5-480p_t2v", "tiny-hunyuan15",
                     "HunyuanVideo15Pipeline", 480, 848, 61, 50, 6.0, guider=True),
}


def tuned_backend(device: torch.device) -> str:
    """The attention backend a user tuning diffusers by hand would set (diffusers' own names): FA3 where
    installed, else cuDNN's SDPA."""
    from sgld.levers.attention import ATTENTION_BACKENDS, optional_backend_unavailable_reason

    return "_flash_3" if optional_backend_unavailable_reason("fa3", device) is None else ATTENTION_BACKENDS["cudnn"]


def uncompile_blocks(module: torch.nn.Module) -> None:
    """Undo ``compile_repeated_blocks``: every block runs its eager forward again."""
    for block in module.modules():
        if getattr(block, "_compiled_call_impl", None) is not None:
            block._compiled_call_impl = None


@dataclass
class Measurement:
    """One pipeline's figures for one workload."""

    name: str
    steps_run: int
    e2e_s: float
    step_s: float
    dit_forward_ms: float
    text_encode_s: float | None
    vae_decode_s: float | None
    peak_gib: float
    full_steps: int
    compile_s: float | None = None
    psnr_db: float | None = None
    note: str = ""
    mfu: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def e2e_full_s(self) -> float:
        """End-to-end at the model's full step count: measured run + (full - run) x s/step."""
        return self.e2e_s + (self.full_steps - self.steps_run) * self.step_s


def forward_batch(args: tuple, kwargs: dict) -> int:
    """The batch of a DiT forward: hidden_states' first axis, or the length of the latents list Z-Image takes."""
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    if hidden is None:
        return 1
    return len(hidden) if isinstance(hidden, (list, tuple)) else int(hidden.shape[0])


class ForwardTimer:
    """CUDA events around every forward of a module (no host sync inside the loop)."""

    def __init__(self, module: torch.nn.Module, cuda: bool):
        self.pairs: list[tuple[Any, Any]] = []
        self.batch: list[int] = []
        self.cuda = cuda
        self._handles = [module.register_forward_pre_hook(self._pre, with_kwargs=True),
                         module.register_forward_hook(self._post)]

    def _event(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _pre(self, module, args, kwargs):
        self.batch.append(forward_batch(args, kwargs))
        self.pairs.append((self._event(), None))

    def _post(self, module, args, output):
        start, _ = self.pairs[-1]
        self.pairs[-1] = (start, self._event())

    def ms_per_branch(self) -> float:
        """Median forward time divided by its batch (CFG batched runs two branches in one forward)."""
        if self.cuda:
            torch.cuda.synchronize()
            times = [s.elapsed_time(e) for s, e in self.pairs]
        else:
            times = [(e - s) * 1000 for s, e in self.pairs]
        per_branch = [t / b for t, b in zip(times, self.batch)]
        return statistics.median(per_branch[1:] if len(per_branch) > 2 else per_branch)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


class StepClock:
    """Step-end timestamps (the GPU synchronised at each step end, in both pipelines alike).

    s/step is the median gap between step ends, so it needs at least 2 steps and leaves out
    everything before the first step's end in both pipelines.
    """

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.times: list[float] = []

    def tick(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def step_s(self) -> float:
        gaps = [b - a for a, b in zip(self.times, self.times[1:])]
        return statistics.median(gaps) if gaps else float("nan")


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def sgld_attention(transformer: torch.nn.Module, device: torch.device, best: bool) -> str:
    """Put the attention backend sgld's load picks (auto: FA3 where installed, its masked calls on SDPA) back on
    modules the diffusers rows share, and for sgld's best row compile them too; the row's note."""
    from sgld.levers.attention import ATTENTION_BACKENDS, auto_attention_backend
    from sgld.levers.transformer_setup import compile_transformer

    choice = auto_attention_backend(device, 1)
    backend = "native" if choice == "auto" else ATTENTION_BACKENDS[choice]
    transformer.set_attention_backend(backend)
    if not best:
        return ""
    compile_transformer(transformer, backend)
    return f"--attention-backend {choice} --enable-torch-compile"


def median_seconds(fn: Callable[[], Any], cuda: bool, repeats: int = 3) -> float:
    """The median wall time of ``repeats`` calls of ``fn`` under no_grad, the GPU synchronised around each."""
    times = []
    for _ in range(repeats):
        sync(cuda)
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        sync(cuda)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_tflops(device: torch.device) -> float:
    """Measured bf16 GEMM rate (8192^3, median of 20) on this GPU: the MFU denominator."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * 8192**3 / statistics.median(times) / 1e12


def register_attention_flops() -> None:
    """Teach FlopCounterMode the attention ops it does not know: FA3 through diffusers (``_flash_3``) and
    through sgld (ring attention, ``fa3_fp8``). Without them a forward that ran FA3 counted no attention
    FLOPs, and its MFU came out low (Wan2.1-1.3B: 82 TFLOP per forward instead of 283)."""
    import diffusers.models.attention_dispatch  # noqa: F401 - registers its FA3 op
    from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop_count

    import sgld.levers.fp8_attention  # noqa: F401 - registers sgld::fa3_fp8_forward
    import sgld.parallel.sequence  # noqa: F401 - registers sgld::fa3_forward

    def tokens_first(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        # These ops take (batch, tokens, heads, dim); sdpa_flop_count wants (batch, heads, tokens, dim).
        (b, s_q, h_q, d), (_, s_k, h_k, _), (_, _, _, d_v) = q_shape, k_shape, v_shape
        return sdpa_flop_count((b, h_q, s_q, d), (b, h_k, s_k, d), (b, h_k, s_k, d_v))

    for op in (torch.ops._diffusers_flash_attn_3._flash_attn_forward, torch.ops.sgld.fa3_forward,
               torch.ops.sgld.fa3_fp8_forward):
        if op not in flop_registry:
            register_flop_formula(op)(tokens_first)


def forward_flops(transformer: torch.nn.Module, run_once: Callable[[], None]) -> float:
    """FLOPs of one single-branch DiT forward, counted by torch's FlopCounterMode on a real forward."""
    from torch.utils.flop_counter import FlopCounterMode

    register_attention_flops()

    flops: list[int] = []
    batches: list[int] = []

    def pre(module, args, kwargs):
        batches.append(forward_batch(args, kwargs))
        counter = FlopCounterMode(display=False)
        counter.__enter__()
        module._sgld_counter = counter

    def post(module, args, output):
        counter = module._sgld_counter
        counter.__exit__(None, None, None)
        flops.append(counter.get_total_flops())
        raise StopForward

    handles = [transformer.register_forward_pre_hook(pre, with_kwargs=True), transformer.register_forward_hook(post)]
    try:
        run_once()
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return flops[0] / batches[0]


class StopForward(Exception):
    """Ends a run after the first DiT forward (FLOP counting needs one)."""


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 arrays."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


@dataclass(kw_only=True)
class AvRow:
    """One audio-video pipeline's figures (bench/ltx2.py, bench/minimax_h3.py extend it)."""

    name: str
    steps_run: int
    e2e_s: float
    step_s: float
    dit_forward_ms: float  # per sample-branch (a CFG-batched forward of 2 samples counts twice)
    dit_forwards: int  # DiT calls in one generation
    text_encode_s: float | None
    video_decode_s: float | None
    audio_decode_s: float | None
    peak_gib: float
    compile_s: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def write_av_report(path: Path, meta: dict, rows: list, table: Callable[[list], str]) -> None:
    """An audio-video benchmark's rows so far: JSON at ``path`` (each row with its ``e2e_full_s``) and the markdown
    ``table`` beside it (``.md``). Called after each row, so a run stopped part-way keeps what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": [dict(asdict(r), e2e_full_s=r.e2e_full_s) for r in rows]}
    path.write_text(json.dumps(payload, indent=2, default=str))
    path.with_suffix(".md").write_text(table(rows) + "\n")


def av_difference(out: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> dict:
    """Two (uint8 frames, waveform) outputs apart: the largest pixel difference (/255), PSNR (dB), and the largest
    waveform difference over the samples both have (video-with-sound benchmarks: LTX-2, MiniMax-H3)."""
    samples = min(out[1].shape[-1], ref[1].shape[-1])
    return {"frames": int(np.abs(out[0].astype(int) - ref[0].astype(int)).max()), "psnr_db": psnr(out[0], ref[0]),
            "waveform": float(np.abs(out[1][..., :samples] - ref[1][..., :samples]).max())}


def to_uint8(frames) -> np.ndarray:
    """diffusers' np output (float 0..1, video or image batch) -> uint8 (frames, H, W, 3)."""
    array = np.asarray(frames)
    if array.ndim == 5:
        array = array[0]
    if array.dtype != np.uint8:
        array = (array * 255).round().clip(0, 255).astype(np.uint8)
    return array.reshape(-1, *array.shape[-3:])


class Bench:
    """Runs one workload's reference and sgld variants on shared components."""

    def __init__(self, wl: Workload, tiny: bool, steps: int, device: torch.device, peak_tflops: float | None):
        from sgld import DiffGenerator

        self.wl, self.tiny, self.steps, self.device, self.peak = wl, tiny, steps, device, peak_tflops
        self.cuda = device.type == "cuda"
        start = time.perf_counter()
        model_path = wl.tiny if tiny else f"random:{wl.repo}"
        options = dict(wl.sgld_options)
        if options.get("vae_precision") == "match":
            from sgld.run_config import run_config_from_options

            options["vae_precision"] = run_config_from_options({"model_path": model_path}).model.precision
        self.gen = DiffGenerator.from_pretrained(model_path, device=str(device), **options)
        sync(self.cuda)
        self.load_s = time.perf_counter() - start
        self.components = self.gen.pipeline.components
        self.transformer = self.components["transformer"]
        self.height = 64 if tiny else wl.height
        self.width = 64 if tiny else wl.width
        self.frames = 5 if tiny and wl.frames > 1 else wl.frames
        self.results: list[Measurement] = []
        self.lossless: np.ndarray | None = None
        self.best_lossless: Measurement | None = None
        self.meta: dict[str, Any] = {}

    # -- the diffusers reference ------------------------------------------------------------

    def reference_pipeline(self):
        import inspect

        import diffusers

        cls = getattr(diffusers, self.wl.reference)
        names = inspect.signature(cls.__init__).parameters
        return cls(**{n: self.components.get(n) for n in names if n != "self" and n in self.components})

    def reference_kwargs(self, steps: int, clock: StepClock | None) -> dict:
        kwargs: dict[str, Any] = dict(prompt=PROMPT, height=self.height, width=self.width, num_inference_steps=steps,
                                      generator=torch.Generator("cpu").manual_seed(0), output_type="np")  # sgld draws noise on the CPU too
        if self.wl.frames > 1:
            kwargs.update(num_frames=self.frames, negative_prompt=NEGATIVE)
            if not self.wl.guider:
                kwargs.update(guidance_scale=self.wl.guidance)
            else:
                # HunyuanVideo-1.5's reference draws its noise in bf16, which torch 2.11's CPU generator fills with
                # other numbers than fp32 (measured: the first DiT input differed by 6.9 at max 3.3); both sides
                # start from the noise sgld draws (fp32, the same seed), cast by the reference as it casts its own.
                kwargs["latents"] = self.initial_noise()
        elif self.wl.true_cfg:
            kwargs.update(negative_prompt=NEGATIVE, true_cfg_scale=self.wl.guidance)
        else:
            kwargs.update(guidance_scale=self.wl.guidance)
        if clock is not None and not self.wl.guider:  # HunyuanVideo-1.5's pipeline takes no step callback
            def on_step_end(pipe, i, t, callback_kwargs):
                clock.tick()
                return callback_kwargs

            kwargs["callback_on_step_end"] = on_step_end
        return kwargs

    def initial_noise(self) -> torch.Tensor:
        """The noise sgld draws for this video workload's first request (seed 0, fp32, on the CPU)."""
        from diffusers.utils.torch_utils import randn_tensor

        vae = self.components["vae"]
        shape = (1, vae.config.latent_channels, (self.frames - 1) // vae.config.temporal_compression_ratio + 1,
                 self.height // vae.config.spatial_compression_ratio, self.width // vae.config.spatial_compression_ratio)
        return randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(0), dtype=torch.float32).to(self.device)

    @contextmanager
    def _scheduler_clock(self, pipe, clock: StepClock):
        """Step ends as the scheduler steps (for a pipeline without a step callback)."""
        if not self.wl.guider:
            yield
            return
        scheduler = pipe.scheduler
        step = scheduler.step

        def timed(*args, **kwargs):
            out = step(*args, **kwargs)
            clock.tick()
            return out

        scheduler.step = timed
        try:
            yield
        finally:
            del scheduler.step

    def run_reference(self) -> None:
        """diffusers as shipped, then ``diffusers tuned`` (its own attention backend switch and regional compile)."""
        pipe = self.reference_pipeline()
        with components_as_shipped(self.components):  # the reference rows run diffusers' own classes
            pipe(**self.reference_kwargs(1, None))  # warm-up: kernels, cuBLAS handles
            sync(self.cuda)
            self._run_reference(pipe, "diffusers")
            if self.cuda:
                self.run_reference_tuned(pipe)

    def run_reference_tuned(self, pipe) -> None:
        """diffusers tuned by hand: ``set_attention_backend`` (FA3 where installed, else cuDNN) and
        ``compile_repeated_blocks(fullgraph=True)``; undone afterwards so sgld starts from the same modules."""
        transformer = self.transformer
        backend = tuned_backend(self.device)
        note = f"set_attention_backend({backend!r}) + compile_repeated_blocks(fullgraph=True)"
        try:
            transformer.set_attention_backend(backend)
            start = time.perf_counter()
            transformer.compile_repeated_blocks(fullgraph=True)
            pipe(**self.reference_kwargs(1, None))  # compiles the blocks
            sync(self.cuda)
            self._run_reference(pipe, "diffusers tuned", note=note, compile_s=time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - the row's failure is reported, the run goes on
            print(f"diffusers tuned failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            self.meta["diffusers_tuned_failed"] = f"{note}: {type(exc).__name__}: {str(exc)[:300]}"
        finally:
            uncompile_blocks(transformer)
            transformer.set_attention_backend("native")

    def _run_reference(self, pipe, name: str, note: str = "", compile_s: float | None = None) -> None:
        text_s = self._time(lambda: self._reference_encode(pipe))
        clock, timer = StepClock(self.cuda), ForwardTimer(self.transformer, self.cuda)
        self._reset_peak()
        start = time.perf_counter()
        with self._scheduler_clock(pipe, clock):
            out = pipe(**self.reference_kwargs(self.steps, clock))
        sync(self.cuda)
        e2e = time.perf_counter() - start
        dit_ms = timer.ms_per_branch()
        timer.close()
        vae_s = self._reference_decode_time(pipe)
        frames = to_uint8(out.frames if hasattr(out, "frames") else out.images)
        if name == "diffusers":
            self.reference_frames = frames
            if self.cuda:
                self.flops = forward_flops(self.transformer, lambda: pipe(**self.reference_kwargs(1, None)))
        m = self._measurement(name, e2e, clock.step_s(), dit_ms, text_s, vae_s, note=note, compile_s=compile_s)
        if name != "diffusers":
            m.extra["max_diff_vs_diffusers"] = int(np.abs(frames.astype(int) - self.reference_frames.astype(int)).max())
            m.psnr_db = psnr(frames, self.reference_frames)
        self.results.append(m)
        print(f"MEASURED {self.wl.key} {json.dumps(dict(vars(m), e2e_full_s=m.e2e_full_s), default=str)}", flush=True)

    def _reference_encode(self, pipe) -> None:
        if self.wl.reference == "FluxPipeline":
            pipe.encode_prompt(prompt=PROMPT, prompt_2=None, device=self.device)
        elif self.wl.reference == "Flux2KleinPipeline":
            pipe.encode_prompt(prompt=PROMPT, device=self.device)
        elif self.wl.reference == "ZImagePipeline":  # guidance off: the prompt only
            pipe.encode_prompt(prompt=PROMPT, device=self.device, do_classifier_free_guidance=False)
        elif self.wl.reference == "WanPipeline":
            pipe.encode_prompt(prompt=PROMPT, negative_prompt=NEGATIVE, device=self.device)
        else:
            pipe.encode_prompt(prompt=PROMPT, device=self.device)
            pipe.encode_prompt(prompt=NEGATIVE, device=self.device)

    def _reference_decode_time(self, pipe) -> float:
        """diffusers' VAE decode of a latent of this workload's shape (as its pipeline calls it)."""
        vae = pipe.vae
        factor = 2 ** (len(vae.config.block_out_channels) - 1) if hasattr(vae.config, "block_out_channels") else 8
        channels = getattr(vae.config, "z_dim", None) or vae.config.latent_channels
        h, w = self.height // factor, self.width // factor
        if self.wl.reference in ("FluxPipeline", "ZImagePipeline", "Flux2KleinPipeline"):  # 2D latents
            latent = torch.randn(1, channels, h, w, device=self.device, dtype=vae.dtype)
        else:
            f = (self.frames - 1) // 4 + 1
            latent = torch.randn(1, channels, f, h, w, device=self.device, dtype=vae.dtype)
        return self._time(lambda: vae.decode(latent, return_dict=False), repeats=2)

    # -- sgld ---------------------------------------------------------------------------------

    def sgld_kwargs(self, steps: int) -> dict:
        kwargs: dict[str, Any] = dict(height=self.height, width=self.width, num_inference_steps=steps, seed=0,
                                      guidance_scale=self.wl.guidance, save_output=False, return_frames=True)
        if self.wl.frames > 1:
            kwargs.update(num_frames=self.frames, negative_prompt=NEGATIVE)
        elif self.wl.true_cfg:
            kwargs.update(negative_prompt=NEGATIVE)
        return kwargs

    def run_sgld(self, name: str, note: str = "", lossy: bool = False, compile_s: float | None = None,
                 recompile: bool = False) -> Measurement:
        """Time sgld as it is now set up; a lever that compiles has already warmed it up (compile_s).

        ``recompile``: the compiled blocks see changed modules; the warm-up recompiles them, timed.
        """
        if compile_s is None:
            start = time.perf_counter()
            self.gen.generate(PROMPT, **self.sgld_kwargs(1))  # warm-up: kernels, cuBLAS handles
            sync(self.cuda)
            if recompile:
                compile_s = time.perf_counter() - start
        clock, timer = StepClock(self.cuda), ForwardTimer(self.transformer, self.cuda)
        self._reset_peak()
        start = time.perf_counter()
        result = self.gen.generate(PROMPT, step_callback=lambda done, total: done and clock.tick(),
                                   **self.sgld_kwargs(self.steps))
        e2e = time.perf_counter() - start
        dit_ms = timer.ms_per_branch()
        timer.close()
        timings = result.timings
        text_s = timings.get("encode_prompt")
        vae_s = timings.get("decode")
        frames = result.frames.reshape(-1, *result.frames.shape[-3:])
        extra: dict = {}
        if not lossy:
            self.lossless = frames
            diff = int(np.abs(frames.astype(int) - self.reference_frames.astype(int)).max())
            extra["max_diff_vs_diffusers"] = diff
            extra["psnr_vs_diffusers_db"] = psnr(frames, self.reference_frames)
            against = f"max |Δ| vs diffusers {diff}/255, PSNR {extra['psnr_vs_diffusers_db']:.1f} dB"
            note = f"{note}; {against}" if note else against
        m = self._measurement(name, e2e, clock.step_s(), dit_ms, text_s, vae_s, note=note, compile_s=compile_s)
        m.extra.update(extra)
        if lossy and self.lossless is not None:
            m.psnr_db = psnr(frames, self.lossless)
        self.results.append(m)
        print(f"MEASURED {self.wl.key} {json.dumps(dict(vars(m), e2e_full_s=m.e2e_full_s), default=str)}", flush=True)
        return m

    def profile(self, label: str) -> None:
        """Kernel time of one DiT forward as sgld is now set up, by kind (bench/kernel_profile.py)."""
        from kernel_profile import breakdown_table, profile_forwards

        report, (args, kwargs) = profile_forwards(
            self.transformer, lambda steps: self.gen.generate(PROMPT, **self.sgld_kwargs(steps)))
        report["batch"] = forward_batch(args, kwargs)
        self.meta.setdefault("profiles", {})[label] = report
        print(breakdown_table(f"{self.wl.key} {label} (one forward, batch {report['batch']})", report), flush=True)
        if "error" not in report["in_pipeline"]:
            print(breakdown_table(f"{self.wl.key} {label}, forwards 2-4 of a 4-step run", report["in_pipeline"]),
                  flush=True)

    # -- helpers --------------------------------------------------------------------------------

    def _measurement(self, name, e2e, step_s, dit_ms, text_s, vae_s, note="", compile_s=None) -> Measurement:
        m = Measurement(name, self.steps, e2e, step_s, dit_ms, text_s, vae_s, self._peak(), self.wl.steps,
                        compile_s=compile_s, note=note)
        if self.peak and getattr(self, "flops", None):
            m.mfu = self.flops / (dit_ms / 1000) / (self.peak * 1e12)
        return m

    def _time(self, fn: Callable[[], Any], repeats: int = 3) -> float:
        return median_seconds(fn, self.cuda, repeats)

    def _reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def _peak(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else 0.0


def run_levers(bench: Bench, levers: list[str], profile: bool = False) -> None:
    """sgld with its defaults, then each lever.

    Lossless levers that pay stay on for the ones after them (cuDNN, fused QKV, batched CFG,
    compile); lossy ones are measured on top of the lossless state and undone, except FP8,
    which rewrites the weights in place: it and the fast mode after it come last.
    """
    from sgld.levers.fp8 import quantize_blocks_fp8
    from sgld.levers.attention import (ATTENTION_BACKENDS, OPTIONAL_BACKENDS, compiles_fullgraph,
                                       optional_backend_unavailable_reason)
    from sgld.levers.step_cache import enable_step_cache
    from sgld.stages.denoising import CFG_BATCHED, CFG_SEQUENTIAL, DenoisingStage

    pipeline = bench.gen.pipeline
    denoise = pipeline.stage(DenoisingStage)
    cfg_mode = denoise.cfg_mode
    # The attention sgld's load chose (auto: FA3 where installed), back on the modules after the reference rows.
    in_effect = pipeline._backends.get("transformer", "auto")
    attention = "as diffusers picks" if in_effect == "auto" else f"{in_effect} (sgld's auto)"
    bench.best_lossless = bench.run_sgld("sgld default", f"CFG {cfg_mode}; attention {attention}")
    transformer = bench.transformer
    state = {"backend": ATTENTION_BACKENDS.get(in_effect, "native"), "compiled": False, "compile_kwargs": {}}

    def lever(name: str, fn: Callable[[], None]) -> None:
        if name not in levers:
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one lever failing must not lose the others' figures
            print(f"lever {name} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            bench.meta.setdefault("failed_levers", {})[name] = f"{type(exc).__name__}: {str(exc)[:300]}"

    def keep_if_faster(row: Measurement, undo: Callable[[], None]) -> None:
        base = bench.best_lossless
        if base is not None and row.step_s >= base.step_s:
            undo()
            row.note += "; not kept (no faster)"
        else:
            bench.best_lossless = row

    def lossless_backend(backend: str, name: str, note: str) -> None:
        """An exact attention kernel, kept for the rows after it if it is faster."""
        if ATTENTION_BACKENDS[backend] == state["backend"]:
            print(f"lever {backend}: the rows above already run it (sgld's default attention)", flush=True)
            return
        if backend in OPTIONAL_BACKENDS:
            reason = optional_backend_unavailable_reason(backend, bench.device)
            if reason:
                raise RuntimeError(reason)
        transformer.set_attention_backend(ATTENTION_BACKENDS[backend])
        try:
            row = bench.run_sgld(name, note, recompile=state["compiled"])
        except Exception:
            transformer.set_attention_backend(state["backend"])
            raise
        keep_if_faster(row, lambda: transformer.set_attention_backend(state["backend"]))
        if bench.best_lossless is row:
            state["backend"] = ATTENTION_BACKENDS[backend]
            if profile and state["compiled"]:
                bench.profile(f"lossless with {backend}")

    @contextmanager
    def bf16_vae():
        vae = bench.components["vae"]
        dtype = vae.dtype
        vae.to(torch.bfloat16)
        try:
            yield
        finally:
            vae.to(dtype)

    def cudnn():
        lossless_backend("cudnn", "sgld +cudnn attention", "--attention-backend cudnn")

    def fuse_qkv():
        transformer.fuse_qkv_projections()
        row = bench.run_sgld("sgld +fused QKV", "q/k/v projections as one GEMM (diffusers fuse_qkv_projections)")
        keep_if_faster(row, transformer.unfuse_qkv_projections)

    def batched_cfg():
        if not hasattr(pipeline, "set_cfg_mode"):
            return
        pipeline.set_cfg_mode(CFG_BATCHED)
        row = bench.run_sgld("sgld +batched true-CFG", "both branches in one forward, shorter prompt padded + masked")
        keep_if_faster(row, lambda: pipeline.set_cfg_mode(CFG_SEQUENTIAL))
        state["batched_cfg"] = bench.best_lossless is row

    def vae_bf16():
        with bf16_vae():
            bench.run_sgld("sgld +bf16 VAE", "--vae-precision bf16", lossy=True)

    def cache():
        hook = enable_step_cache(transformer, "first_block", 0.05)
        denoise.step_hooks["transformer"].append(hook)  # what the pipeline does with --cache first_block
        try:
            bench.run_sgld("sgld +first-block cache 0.05", "--cache first_block --cache-threshold 0.05", lossy=True)
        finally:
            denoise.step_hooks["transformer"].remove(hook)
            transformer.disable_cache()

    def compile_blocks():
        start = time.perf_counter()
        transformer.compile_repeated_blocks(fullgraph=True)
        bench.gen.generate(PROMPT, **bench.sgld_kwargs(1))
        sync(bench.cuda)
        bench.best_lossless = bench.run_sgld("sgld +compile", "--enable-torch-compile (regional)",
                                             compile_s=time.perf_counter() - start)
        state["compiled"] = True
        if profile:
            bench.profile("lossless (as the row above)")

    def fa3():
        lossless_backend("fa3", "sgld +fa3 attention", "--attention-backend fa3 (FlashAttention-3, exact)")

    def reference_again():
        """diffusers as shipped once more, after sgld's lossless rows: the run's drift (a card warming at its power
        cap, another process) shows as the two diffusers rows' difference, which also must be 0/255."""
        uncompile_blocks(transformer)
        try:
            with components_as_shipped(bench.components):
                bench._run_reference(bench.reference_pipeline(), "diffusers, again",
                                     note="the first row's run repeated after sgld's lossless rows (order check)")
        finally:
            if state["compiled"]:
                transformer.compile_repeated_blocks(fullgraph=True, **state["compile_kwargs"])

    def cudagraphs():
        from sgld.levers.cuda_graph import enable_cuda_graphs

        if not enable_cuda_graphs(transformer, bench.device):
            raise RuntimeError("cuda_graphs needs a CUDA GPU")
        try:
            bench.gen.generate(PROMPT, **bench.sgld_kwargs(3))  # 2 uncaptured calls per shape, then the capture
            sync(bench.cuda)
            row = bench.run_sgld("sgld +CUDA graphs", "--cuda-graphs: the whole DiT forward replayed as one CUDA "
                                 "graph per shape")
            if bench.best_lossless is None or row.step_s < bench.best_lossless.step_s:
                bench.best_lossless = row
                if profile:
                    bench.profile("lossless with CUDA graphs")
            else:
                row.note += "; no faster"
        finally:
            # The graphs replay reads of the weights where they were: the levers after this one rewrite them.
            del transformer.forward

    @contextmanager
    def maskless_backend(backend: str):
        """``backend`` (an optional kernel that takes no attention mask) on the DiT, CFG unbatched; undone after."""
        reason = optional_backend_unavailable_reason(backend, bench.device)
        if reason:
            raise RuntimeError(reason)
        transformer.set_attention_backend(ATTENTION_BACKENDS[backend])
        if state.get("batched_cfg"):  # no attention mask: the padded batch cannot use it
            pipeline.set_cfg_mode(CFG_SEQUENTIAL)
        try:
            yield
        finally:
            transformer.set_attention_backend(state["backend"])
            if state.get("batched_cfg"):
                pipeline.set_cfg_mode(CFG_BATCHED)

    def with_sage(name: str, note: str) -> None:
        with maskless_backend("sage"):
            if state["compiled"]:
                transformer.compile_repeated_blocks(fullgraph=compiles_fullgraph("sage"), **state["compile_kwargs"])
            try:
                bench.run_sgld(name, note, lossy=True, recompile=state["compiled"])
            finally:
                if state["compiled"]:
                    # Measured: a fullgraph recompile after sage's piecewise graphs ran the blocks eagerly
                    # (no error); compiling in pieces from here on keeps them compiled.
                    transformer.compile_repeated_blocks(fullgraph=False, **state["compile_kwargs"])

    def sage():
        with_sage("sgld +sage attention", "--attention-backend sage (SageAttention2: INT8 QK, FP8 PV)")

    def fa3_fp8():
        with maskless_backend("fa3_fp8"):
            bench.run_sgld("sgld +fa3 fp8 attention", "--attention-backend fa3_fp8 (FA3's FP8 forward: e4m3 Q/K/V, "
                           "one scale per head, K centred)", lossy=True, recompile=state["compiled"])
            if profile:
                bench.profile("fa3 fp8 attention")

    def fp8():
        quantize_blocks_fp8(transformer, bench.device)
        bench.run_sgld("sgld +fp8 linear", "--quantization fp8 (e4m3, row-wise scales)", lossy=True,
                       recompile=state["compiled"])
        if profile:
            bench.profile("fp8 linear")

    def fast():
        with bf16_vae():
            with_sage("sgld fast mode", "+experiment=fast: sage attention, fp8 linear, bf16 VAE (+ the lossless levers)")
        if profile and not state.get("batched_cfg"):
            transformer.set_attention_backend(ATTENTION_BACKENDS["sage"])
            if state["compiled"]:
                transformer.compile_repeated_blocks(fullgraph=compiles_fullgraph("sage"), **state["compile_kwargs"])
            bench.profile("fast mode")

    for name, fn in (("cudnn", cudnn), ("fuse_qkv", fuse_qkv), ("batched_cfg", batched_cfg), ("vae_bf16", vae_bf16),
                     ("cache", cache), ("compile", compile_blocks), ("fa3", fa3),
                     ("cudagraphs", cudagraphs), ("again", reference_again), ("fa3_fp8", fa3_fp8), ("sage", sage),
                     ("fp8", fp8), ("fast", fast)):
        lever(name, fn)


def table(results: dict[str, list[Measurement]], peak: float | None) -> str:
    """The markdown table of every measurement, with ratios against diffusers."""
    lines = ["| workload | pipeline | steps run | s/step | DiT fwd ms/branch | MFU | text s | VAE s | e2e s (run) "
             "| e2e s (full, extrapolated) | vs diffusers | peak GiB | compile s | PSNR dB | note |",
             "|" + "---|" * 15]
    for key, ms in results.items():
        ref = ms[0].e2e_full_s
        for m in ms:
            fmt = lambda v, f="{:.3f}": "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)  # noqa: E731
            lines.append(f"| {key} | {m.name} | {m.steps_run} | {fmt(m.step_s)} | {fmt(m.dit_forward_ms, '{:.1f}')} | "
                         f"{fmt(m.mfu, '{:.0%}')} | {fmt(m.text_encode_s)} | {fmt(m.vae_decode_s)} | {fmt(m.e2e_s, '{:.2f}')} | "
                         f"{fmt(m.e2e_full_s, '{:.2f}')} | {m.e2e_full_s / ref:.2f}× | {fmt(m.peak_gib, '{:.1f}')} | "
                         f"{fmt(m.compile_s, '{:.1f}')} | {fmt(m.psnr_db, '{:.1f}')} | {m.note} |")
    if peak:
        lines.append(f"\nbf16 GEMM peak measured in this run: {peak:.0f} TFLOP/s (MFU denominator).")
    tuned_ratios = [f"{key} {m.name} {m.e2e_full_s / tuned.e2e_full_s:.2f}×" for key, ms in results.items()
                    for tuned in [next((r for r in ms if r.name == "diffusers tuned"), None)] if tuned
                    for m in ms if m.name.startswith("sgld")]
    if tuned_ratios:
        lines.append("\nAgainst `diffusers tuned` (e2e, full): " + "; ".join(tuned_ratios))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write JSON (and the table) to --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="wan13,flux,qwen")
    parser.add_argument("--steps", type=int, default=4, help="denoise steps actually run, at least 2 (extrapolated to the full count)")
    parser.add_argument("--levers", default="cudnn,fuse_qkv,batched_cfg,vae_bf16,cache,compile,fa3,again,sage,fp8,fast",
                        help="levers in order; also cudagraphs (the whole forward as CUDA graphs, measured, then undone) "
                             "and fa3_fp8 (FA3's FP8 attention forward, lossy, measured, then undone); 'again' "
                             "measures diffusers as shipped once more after the lossless levers (the run's drift)")
    parser.add_argument("--profile", action="store_true", help="kernel time by kind of one DiT forward (lossless, fast)")
    parser.add_argument("--tiny", action="store_true", help="tiny built-in models on the CPU (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("bench_speed.json"))
    args = parser.parse_args(argv)

    from sgld.api import quiet_library_logs

    quiet_library_logs()
    # One process compiles the blocks for every lever in turn (attention backends, FP8 modules): past
    # dynamo's default of 8 graphs per frame it would silently run the blocks eagerly.
    torch._dynamo.config.cache_size_limit = 64
    device = torch.device("cpu" if args.tiny else "cuda")
    peak = matmul_peak_tflops(device) if device.type == "cuda" else None
    levers = [lever for lever in args.levers.split(",") if lever]
    results: dict[str, list[Measurement]] = {}
    meta: dict[str, Any] = {"command": " ".join(sys.argv), "torch": torch.__version__, "peak_bf16_tflops": peak,
                            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    for key in args.workloads.split(","):
        wl = WORKLOADS[key]
        bench = Bench(wl, args.tiny, args.steps, device, peak)
        meta[f"{key}_load_s"] = bench.load_s
        bench.run_reference()
        run_levers(bench, levers, args.profile and device.type == "cuda")
        results[key] = bench.results
        meta[key] = bench.meta
        meta[f"{key}_flops_per_forward"] = getattr(bench, "flops", None)
        print(table({key: bench.results}, None), flush=True)
        write(args.out, meta, results, peak)  # after each workload: a later failure loses nothing
        del bench
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\n" + table(results, peak))
    return 0


def write(out: Path, meta: dict, results: dict[str, list[Measurement]], peak: float | None) -> None:
    """The JSON of every measurement, and the markdown table beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": {k: [dict(vars(m), e2e_full_s=m.e2e_full_s) for m in ms] for k, ms in results.items()}}
    out.write_text(json.dumps(payload, indent=2, default=str))
    out.with_suffix(".md").write_text(table(results, peak) + "\n")


if __name__ == "__main__":
    sys.exit(main())
