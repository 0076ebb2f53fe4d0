"""Batched generation: several requests through one forward, each output equal to its solo run.

fp32 tiny models on the CPU. For every family, 3-4 requests with different prompts, seeds and
guidance scales (and input images) run as one batch; each output equals the same request run
alone within 2/255 per pixel, and the DiT saw one forward per branch and step for the whole batch.
"""

from __future__ import annotations

import numpy as np
import pytest

from sgld.api import BatchItem
from sgld.errors import GenerationStopped, UserError

TOLERANCE = 2  # of 255
OUT = {"save_output": False, "return_frames": True}
ITEMS = [
    {"prompt": "a red fox in the snow", "seed": 1, "guidance_scale": 3.0},
    {"prompt": "a blue whale in a deep ocean, light rays and many small silver fish", "seed": 7,
     "guidance_scale": 5.0, "negative_prompt": "blurry, low quality, watermark"},
    {"prompt": "city", "seed": 3, "guidance_scale": 4.0},
    {"prompt": "a lighthouse at dusk", "seed": 11, "guidance_scale": 6.0},
]
# family -> (model, settings shared by the batch, requests in the batch, input images)
CASES = {
    "flux": ("tiny-flux", {"num_inference_steps": 3}, 4, False),
    "qwen_image": ("tiny-qwen-image", {"num_inference_steps": 3}, 4, False),  # prompts of different token lengths
    "qwen_image_edit": ("tiny-qwen-image-edit", {"num_inference_steps": 2, "height": 64, "width": 48}, 3, True),
    "wan_t2v": ("tiny-wan-t2v", {"num_inference_steps": 3}, 4, False),
    "hunyuan": ("tiny-hunyuan", {"num_inference_steps": 3}, 3, False),
    "wan_i2v": ("tiny-wan21-i2v", {"num_inference_steps": 2}, 3, True),
    "z_image": ("tiny-z-image", {"num_inference_steps": 3}, 4, False),  # prompts of different token lengths
    "flux2_klein": ("tiny-flux2-klein", {"num_inference_steps": 3}, 4, False),
    "flux2_dev": ("tiny-flux2", {"num_inference_steps": 3}, 4, False),  # per-sample embedded guidance
    "hunyuan15_t2v": ("tiny-hunyuan15", {"num_inference_steps": 3}, 4, False),
    "hunyuan15_i2v": ("tiny-hunyuan15-i2v", {"num_inference_steps": 2}, 3, True),  # sized from the images
}


@pytest.fixture(scope="module")
def input_images(tmp_path_factory) -> list[str]:
    """Four 56x40 PNGs of one size and different content (an edit batch shares the input size)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("batch_inputs")
    y, x = np.mgrid[0:40, 0:56]
    paths = []
    for k in range(4):
        pixels = np.stack([x * (2 + k), y * 6, 255 - x * (4 - k)], axis=-1).astype(np.uint8)
        pixels[5 + 5 * k : 20 + 5 * k, 10:30] = (250, 40 * k, 30)
        paths.append(str(folder / f"input{k}.png"))
        Image.fromarray(pixels).save(paths[-1])
    return paths


def dit_batches(generator) -> tuple[list[int], callable]:
    """Records the batch size of every DiT forward (hidden_states' first axis); returns (sizes, remove)."""
    from sgld.stages.denoising import DenoisingStage

    sizes: list[int] = []
    experts = [module for _, module in generator.pipeline.stage(DenoisingStage).experts]
    handles = [module.register_forward_pre_hook(lambda m, a, kw: sizes.append(kw["hidden_states"].shape[0]),
                                                with_kwargs=True) for module in experts]
    return sizes, lambda: [h.remove() for h in handles]


def requests(case: str, images: list[str]) -> list[dict]:
    _, shared, count, with_image = CASES[case]
    items = [{**item, **shared, **OUT} for item in ITEMS[:count]]
    if with_image:
        for item, path in zip(items, images):
            item["image_path"] = path
    return items


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("case", list(CASES))
def test_each_output_of_a_batch_equals_its_solo_run(case, generators, input_images):
    generator = generators(CASES[case][0])
    items = requests(case, input_images)
    solo = [generator.generate(**item).frames for item in items]
    sizes, remove = dit_batches(generator)
    try:
        batched = generator.generate_batch([BatchItem(item) for item in items])
    finally:
        remove()
    for i, (alone, result) in enumerate(zip(solo, batched)):
        assert not isinstance(result, Exception), result
        assert result.frames.shape == alone.shape
        assert max_diff(result.frames, alone) <= TOLERANCE, f"request {i} differs from its solo run"
    assert max_diff(solo[0], solo[1]) > 20  # the requests really differ: equal outputs would prove nothing
    # One forward per branch and step for the whole batch (cond and uncond batched: 2 x the requests).
    steps = items[0]["num_inference_steps"]
    assert len(sizes) in (steps, 2 * steps)
    assert set(sizes) <= {len(items), 2 * len(items)}


def test_a_batch_encodes_its_prompts_in_one_call_and_decodes_in_one(generators):
    generator = generators("tiny-flux")
    pipeline = generator.pipeline
    calls = {"text_encoder": [], "text_encoder_2": [], "vae": []}
    handles = [pipeline.components[name].register_forward_pre_hook(lambda m, a, name=name: calls[name].append(a[0].shape[0]))
               for name in ("text_encoder", "text_encoder_2")]
    vae = pipeline.components["vae"]
    original = vae.decode
    vae.decode = lambda z, *a, **kw: (calls["vae"].append(z.shape[0]), original(z, *a, **kw))[1]
    try:
        results = generator.generate_batch([BatchItem({**item, "num_inference_steps": 2, **OUT}) for item in ITEMS])
    finally:
        for h in handles:
            h.remove()
        del vae.decode
    assert all(not isinstance(r, Exception) for r in results)
    assert calls == {"text_encoder": [4], "text_encoder_2": [4], "vae": [4]}


def test_a_sample_that_leaves_drops_out_and_the_others_equal_their_solo_runs(generators):
    generator = generators("tiny-wan-t2v")
    items = [{**item, "num_inference_steps": 4, **OUT} for item in ITEMS[:3]]
    solo = [generator.generate(**item).frames for item in items]

    class Cancelled(Exception):
        pass

    def cancel_after_two(done, total):
        if done == 2:
            raise Cancelled

    stopped = [False]
    sizes, remove = dit_batches(generator)
    try:
        results = generator.generate_batch([
            BatchItem(items[0]),
            BatchItem(items[1], step_callback=cancel_after_two),
            BatchItem(items[2], stop_check=lambda: stopped[0] or stopped.__setitem__(0, True)),  # stops after step 2
        ])
    finally:
        remove()
    assert isinstance(results[1], Cancelled)
    assert isinstance(results[2], GenerationStopped) and "after step 2 of 4" in str(results[2])
    assert max_diff(results[0].frames, solo[0]) <= TOLERANCE
    # Steps 1-2 ran the three samples (cond + uncond batched), steps 3-4 the one left.
    assert sizes == [6, 6, 2, 2]


def test_items_are_checked_and_grouped_before_they_batch(generators, tmp_path):
    generator = generators("tiny-wan-t2v")
    sizes, remove = dit_batches(generator)
    items = [
        {"prompt": "a", "seed": 1, "num_inference_steps": 2},
        {"prompt": "b", "seed": 2, "num_inference_steps": 2, "height": 60},  # fails its check, never enters a batch
        {"prompt": "c", "seed": 3, "num_inference_steps": 3},  # another step count: its own batch
        {"prompt": "d", "seed": 4, "num_inference_steps": 2},
        {"prompt": "e", "seed": 5, "num_inference_steps": 2},
    ]
    try:
        results = generator.generate_batch([BatchItem({**item, **OUT}) for item in items], max_batch_size=2)
    finally:
        remove()
    assert isinstance(results[1], UserError) and "height=60" in str(results[1])
    assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i != 1)
    # a+d (2 steps), then e alone (max 2 per batch), then c (3 steps); cond + uncond batched.
    assert sizes == [4, 4, 2, 2, 2, 2, 2]


def test_an_engine_error_fails_its_batch_and_the_generator_goes_on(generators, monkeypatch):
    generator = generators("tiny-wan-t2v")
    dit = generator.pipeline.dits["transformer"]
    original = dit.forward

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(dit, "forward", broken)
    results = generator.generate_batch([BatchItem({**item, "num_inference_steps": 2, **OUT}) for item in ITEMS[:2]])
    assert all(isinstance(r, RuntimeError) and "illegal memory access" in str(r) for r in results)
    monkeypatch.setattr(dit, "forward", original)
    results = generator.generate_batch([BatchItem({**item, "num_inference_steps": 2, **OUT}) for item in ITEMS[:2]])
    assert all(not isinstance(r, Exception) for r in results)


def test_batch_keys_keep_apart_what_cannot_share_a_forward(generators, input_images, tmp_path):
    from PIL import Image

    from sgld.request import Request

    def key(model, **settings):
        generator = generators(model)
        run = generator.check(**{"prompt": "p", **settings})
        return generator.pipeline.spec.batch_key(Request.from_sampling(run.sampling))

    assert key("tiny-wan-t2v", seed=1, guidance_scale=3.0) == key("tiny-wan-t2v", seed=2, guidance_scale=7.0,
                                                                   negative_prompt="x")
    assert key("tiny-wan-t2v") != key("tiny-wan-t2v", num_inference_steps=7)
    assert key("tiny-wan-t2v") != key("tiny-wan-t2v", guidance_scale=1.0)  # no uncond branch
    assert key("tiny-wan-t2v") != key("tiny-wan-t2v", flow_shift=2.0)
    assert key("tiny-wan-t2v") != key("tiny-wan-t2v", num_frames=5)
    bigger = tmp_path / "big.png"
    Image.open(input_images[0]).resize((80, 40)).save(bigger)
    edit = "tiny-qwen-image-edit"  # the output and condition tokens follow the input image's size
    assert key(edit, image_path=input_images[0]) == key(edit, image_path=input_images[1])
    assert key(edit, image_path=input_images[0]) != key(edit, image_path=str(bigger))


def test_compiled_model_takes_any_batch_size_and_size_without_piling_up_graphs(generators):
    """--enable-torch-compile: batch sizes 1..5 at three output sizes. Dynamo specializes batch 1 and makes
    the batch and token axes dynamic after the first change, so graphs stop growing after two sizes (no
    recompile limit hit), and a compiled batch equals the eager solo run."""
    from torch._dynamo.utils import counters

    from sgld import DiffGenerator

    compiled = DiffGenerator.from_pretrained("tiny-flux", enable_torch_compile=True)

    def run(size, n):
        items = [BatchItem({**ITEMS[i % 4], "num_inference_steps": 2, "height": size, "width": size, **OUT})
                 for i in range(n)]
        results = compiled.generate_batch(items)
        assert not [r for r in results if isinstance(r, Exception)]
        return results

    for size, n in ((64, 1), (64, 3), (96, 1), (96, 2)):
        run(size, n)
    graphs = counters["stats"]["unique_graphs"]
    results = None
    for n in (1, 2, 3, 5):
        results = run(128, n)
    assert counters["stats"]["unique_graphs"] == graphs
    solo = generators("tiny-flux").generate(**{**ITEMS[0], "num_inference_steps": 2,
                                               "height": 128, "width": 128, **OUT}).frames
    assert max_diff(results[0].frames, solo) <= TOLERANCE
