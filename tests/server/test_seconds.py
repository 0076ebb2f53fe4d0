"""``seconds`` on /v1/videos: rounded to the model's nearest valid frame count for every video family,
on one process and on 2 gloo ranks (where the server holds only the model folder's description)."""

from __future__ import annotations

import pytest

from sgld.models.folder_model import FolderModel

from tests.conftest import read_mp4
from tests.server.conftest import ServerProcess, launched_together, wait_for

# One tiny model per video family (conf/model name -> model path). They default to 8 fps, so 1 s is 8
# frames, whose nearest valid count (temporal factor 4: 4k + 1) is 9.
VIDEO_FAMILIES = {"tiny_wan": "tiny-wan-t2v", "tiny_wan22_ti2v": "tiny-wan22-ti2v", "tiny_wan21_i2v": "tiny-wan21-i2v",
                  "tiny_hunyuan": "tiny-hunyuan"}
TWO_RANKS = ("parallel.num_gpus=2", "parallel.enable_cfg_parallel=true", "parallel.timeout_s=120")


# Every family on one process; on 2 ranks one (an I2V model: its first frame goes to the ranks too). The folder's
# description and the loaded modules give each family the same temporal factor (test_families.py), so the other
# families on 2 ranks would run the same code on the same numbers.
CASES = [(model, 1) for model in sorted(VIDEO_FAMILIES)] + [("tiny_wan21_i2v", 2)]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The server of every case, all launched when the first is asked for (a start is mostly a single-threaded
    import: side by side they take both cores); each test stops its own, any left are stopped at the end."""
    launched = {(model, ranks): ServerProcess(tmp_path_factory.mktemp(f"{model}-{ranks}") / "out",
                                              *(TWO_RANKS if ranks == 2 else ()), model=model, hydra=True)
                for model, ranks in CASES}
    with launched_together(launched):
        yield launched


@pytest.mark.parametrize("model,ranks", CASES)
def test_seconds_become_the_models_nearest_valid_frame_count(model, ranks, servers, tmp_path, input_png):
    srv = servers[(model, ranks)]
    srv.wait_ready(timeout=240)
    try:
        client = srv.openai()
        extra = {"input_reference": ("first.png", input_png.read_bytes(), "image/png")} if "i2v" in model else {}
        video = client.videos.create(prompt="a red fox", seconds="1", size="64x64",
                                     extra_body={"num_inference_steps": 2}, **extra)
        video = wait_for(client, video.id, timeout=120)
        assert video.status == "completed", video.error
        factor = FolderModel.of(VIDEO_FAMILIES[model]).constraints.temporal_factor
        path = tmp_path / "out.mp4"
        path.write_bytes(client.videos.download_content(video_id=video.id).read())
        _, frames = read_mp4(path)
        assert len(frames) == 9 and (len(frames) - 1) % factor == 0
        assert video.seconds == "1.125"  # 9 frames at 8 fps
    finally:
        srv.stop()
