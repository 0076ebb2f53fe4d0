"""/v1/images/generations and /v1/images/edits on real servers with tiny image models, via the openai SDK."""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
from PIL import Image

from tests.server.conftest import ServerProcess, launched_together


# Every tiny model this module serves, one server each.
MODELS = ("tiny-qwen-image", "tiny-qwen-image-edit", "tiny-z-image", "tiny-flux2-klein", "tiny-flux2",
          "tiny-qwen-image-edit-plus")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """``servers(model)``: the ready server of one of MODELS, all launched together when the fixture is first used
    (a start is mostly a single-threaded import: side by side they take both cores, about half the time of one
    after another); all are stopped at the end."""
    launched = {name: ServerProcess(tmp_path_factory.mktemp(name) / "out", model=name) for name in MODELS}
    with launched_together(launched, timeout=240) as ready:
        yield ready


@pytest.fixture(scope="module")
def t2i_server(servers):
    return servers("tiny-qwen-image")


@pytest.fixture(scope="module")
def edit_server(servers):
    return servers("tiny-qwen-image-edit")


def client_for(srv):
    return srv.openai()


def decode(item) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
    image.load()
    return image


def test_generations_return_n_images_of_the_asked_size(t2i_server):
    client = client_for(t2i_server)
    result = client.images.generate(prompt="a red fox in the snow", size="64x48", n=2, response_format="b64_json",
                                    output_format="png", extra_body={"seed": 3, "num_inference_steps": 2})
    images = [decode(item) for item in result.data]
    assert [(im.format, im.size) for im in images] == [("PNG", (64, 48))] * 2
    # n images use consecutive seeds: they differ
    assert np.abs(np.asarray(images[0], float) - np.asarray(images[1], float)).max() > 10


def test_generations_output_format_and_determinism(t2i_server):
    client = client_for(t2i_server)
    args = dict(prompt="a cat", size="32x32", response_format="b64_json", extra_body={"seed": 9, "num_inference_steps": 2})
    webp = decode(client.images.generate(output_format="webp", **args).data[0])
    assert webp.format == "WEBP" and webp.size == (32, 32)
    a = decode(client.images.generate(**args).data[0])
    b = decode(client.images.generate(**args).data[0])
    assert np.array_equal(np.asarray(a), np.asarray(b))  # same seed, same image


def test_generations_reject_bad_input_with_the_field(t2i_server):
    client = client_for(t2i_server)
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(prompt="a cat", size="60x60")
    assert err.value.body["param"] == "size" and "multiple of 16" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(prompt="a cat", response_format="gif")
    assert err.value.body["param"] == "response_format"


def test_text_to_image_model_refuses_edits(t2i_server, input_png):
    client = client_for(t2i_server)
    with open(input_png, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        client.images.edit(image=f, prompt="make it blue")
    assert err.value.body["param"] == "model" and "/v1/images/generations" in err.value.body["message"]


def test_edit_returns_an_image(edit_server, input_png):
    client = client_for(edit_server)
    with open(input_png, "rb") as f:
        result = client.images.edit(image=f, prompt="make it blue", size="64x64",
                                    extra_body={"num_inference_steps": 2, "seed": 1})
    image = decode(result.data[0])  # an edit answers b64_json in JPEG unless asked otherwise (SGLang's defaults)
    assert image.format == "JPEG" and image.size == (64, 64)


def test_edit_errors(edit_server, input_png, tmp_path):
    client = client_for(edit_server)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with open(junk, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        client.images.edit(image=f, prompt="make it blue", size="64x64")
    assert err.value.body["param"] == "image"
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(prompt="a cat", size="64x64")
    assert err.value.body["param"] == "model" and "/v1/images/edits" in err.value.body["message"]
    with open(input_png, "rb") as f, pytest.raises(openai.BadRequestError) as err:
        client.images.edit(image=f, prompt="make it blue", size="64x50")
    assert err.value.body["param"] == "size"


def test_image_model_refuses_videos(t2i_server):
    client = client_for(t2i_server)
    with pytest.raises(openai.BadRequestError) as err:
        client.videos.create(prompt="a cat")
    assert err.value.body["param"] == "model" and "/v1/images" in err.value.body["message"]


def test_seed_examples_work(t2i_server, edit_server, input_png):
    """The seed's SDK calls (bytes upload, response_format=b64_json, the served model id) and its curl form."""
    import httpx2 as httpx

    client = client_for(t2i_server)
    model = client.models.list().data[0].id
    resp = client.images.generate(model=model, prompt="A cute raccoon hacking a GPU cluster at night", size="64x64",
                                  n=1, response_format="b64_json")
    assert decode(resp.data[0]).size == (64, 64)

    body = httpx.post(t2i_server.url + "/images/generations", json={"prompt": "x", "response_format": "bmp"}).json()
    assert body["detail"] == body["error"]["message"] and "url, b64_json" in body["detail"]
    assert body["error"]["param"] == "response_format" and body["error"]["type"] == "invalid_request_error"

    edit_client = client_for(edit_server)
    resp = edit_client.images.edit(model=edit_client.models.list().data[0].id, image=input_png.read_bytes(),
                                   prompt="Change the text to CUDA FOR LIFE", size="32x32", response_format="b64_json",
                                   extra_body={"num_inference_steps": 1})
    assert decode(resp.data[0]).size == (32, 32)
    with open(input_png, "rb") as f:
        raw = httpx.post(edit_server.url + "/images/edits", timeout=120,
                         data={"prompt": "make it blue", "response_format": "b64_json", "size": "32x32",
                               "num_inference_steps": "1"},
                         files={"image[]": ("input.png", f, "image/png")})
    assert raw.status_code == 200, raw.text
    assert decode(type("Item", (), {"b64_json": raw.json()["data"][0]["b64_json"]})).size == (32, 32)


@pytest.mark.parametrize("model,guidance", [("tiny-z-image", None), ("tiny-z-image", 3.0),  # Turbo's default (off)
                                            ("tiny-flux2-klein", None), ("tiny-flux2-klein", 1.0),
                                            ("tiny-flux2", 2.5)])
def test_new_families_serve_what_the_python_api_makes(servers, generators, model, guidance):
    srv = servers(model)
    extra = {"seed": 4, "num_inference_steps": 3, **({} if guidance is None else {"guidance_scale": guidance})}
    result = client_for(srv).images.generate(prompt="a red fox in the snow", size="48x64", response_format="b64_json",
                                             output_format="png", extra_body=extra)
    image = np.asarray(decode(result.data[0]).convert("RGB")).astype(int)
    assert image.shape == (64, 48, 3)
    local = generators(model).generate("a red fox in the snow", width=48, height=64, return_frames=True,
                                       save_output=False, **extra).frames[0].astype(int)
    assert np.abs(image - local).max() <= 2


def test_z_image_playground_makes_an_image(servers, browser):
    z_image_server = servers("tiny-z-image")
    import httpx2 as httpx

    info = httpx.get(z_image_server.base + "/playground/info", timeout=10).json()
    assert info["kind"] == "image" and info["defaults"]["guidance_scale"] == 0.0
    page = browser.new_page()
    page.goto(z_image_server.base + "/")
    page.wait_for_function("document.getElementById('model-line').textContent.includes('tiny-z-image')")
    assert not page.get_by_label("Frames").is_visible()  # an image model: no frame count
    assert page.get_by_label("Guidance").input_value() == "0"
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
    page.get_by_label("Steps").fill("2")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#output img", timeout=60_000)
    assert page.get_by_role("status").text_content().startswith("Done")
    page.close()


def test_edit_plus_composes_several_uploads(servers, generators, input_png, tmp_path):
    plus_server = servers("tiny-qwen-image-edit-plus")
    second = tmp_path / "second.png"
    Image.open(input_png).rotate(90, expand=True).save(second)
    client = client_for(plus_server)
    with open(input_png, "rb") as a, open(second, "rb") as b:  # the SDK sends a list as image[] parts
        result = client.images.edit(image=[a, b], prompt="put them together", size="32x32", output_format="png",
                                    extra_body={"num_inference_steps": 2, "seed": 4})
    image = np.asarray(decode(result.data[0]).convert("RGB")).astype(int)
    local = generators("tiny-qwen-image-edit-plus").generate(
        "put them together", image_path=[str(input_png), str(second)], width=32, height=32, num_inference_steps=2,
        seed=4, return_frames=True, save_output=False).frames[0].astype(int)
    assert image.shape == (32, 32, 3) and np.abs(image - local).max() <= 2
    assert not list((plus_server.output_dir / "files").glob("*_input*"))  # the uploads are gone with the job
    with open(input_png, "rb") as a, pytest.raises(openai.BadRequestError) as err:
        client.images.edit(image=[a] * 4, prompt="too many", size="32x32")
    assert err.value.body["param"] == "image" and "takes up to 3" in err.value.body["message"]
    import httpx2 as httpx

    form = httpx.get(plus_server.base + "/openapi.json", timeout=10).json()["components"]["schemas"]["ImageEditForm"]
    assert form["properties"]["image[]"]["maxItems"] == 3 and form["required"] == ["prompt"]


def test_edit_plus_playground_uploads_several_images(servers, browser, input_png, tmp_path):
    plus_server = servers("tiny-qwen-image-edit-plus")
    second = tmp_path / "second.png"
    Image.open(input_png).rotate(90, expand=True).save(second)
    page = browser.new_page()
    page.goto(plus_server.base + "/")
    page.wait_for_function("document.getElementById('model-line').textContent.includes('tiny-qwen-image-edit-plus')")
    assert "1 to 3" in page.locator("#image-label").text_content()
    page.set_input_files("#image", [str(input_png), str(second)])
    page.get_by_label("Prompt", exact=True).fill("put them together")
    page.get_by_label("Width").fill("32")
    page.get_by_label("Height").fill("32")
    page.get_by_label("Steps").fill("1")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#output img", timeout=60_000)
    assert page.get_by_role("status").text_content().startswith("Done")
    page.close()


def test_flux2_takes_reference_images_on_the_edits_endpoint(servers, generators, tmp_path, browser):
    import httpx2 as httpx

    klein = servers("tiny-flux2-klein")
    reference = tmp_path / "reference.png"
    y, x = np.mgrid[0:80, 0:96]
    Image.fromarray(np.stack([x * 2, y * 3, 255 - x * 2], axis=-1).astype(np.uint8)).save(reference)
    extra = {"num_inference_steps": 2, "seed": 4}
    with open(reference, "rb") as f:
        result = client_for(klein).images.edit(image=f, prompt="a red fox like this", size="48x64", output_format="png",
                                               extra_body=extra)
    image = np.asarray(decode(result.data[0]).convert("RGB")).astype(int)
    local = generators("tiny-flux2-klein").generate("a red fox like this", image_path=str(reference), width=48,
                                                    height=64, return_frames=True, save_output=False, **extra)
    assert np.abs(image - local.frames[0].astype(int)).max() <= 2
    paths = httpx.get(klein.base + "/openapi.json", timeout=10).json()["paths"]
    assert "/v1/images/generations" in paths and "/v1/images/edits" in paths  # text alone, or with references
    page = browser.new_page()
    page.goto(klein.base + "/")
    page.wait_for_function("document.getElementById('model-line').textContent.includes('reference images')")
    assert page.locator("#image-label").text_content().startswith("Reference images, optional, up to 4")
    page.close()


def test_sglangs_defaults_a_url_to_a_jpeg_and_the_job_by_id(t2i_server):
    """Omitted response_format and output_format answer SGLang's way: a URL (served with the key and retention of
    video content) to a JPEG; the answer carries the job id, timing and memory; the job can be read and deleted."""
    import httpx2 as httpx

    result = client_for(t2i_server).images.with_raw_response.generate(
        prompt="a cat", size="32x32", extra_body={"seed": 2, "num_inference_steps": 1})
    body = result.http_response.json()
    assert body["id"].startswith("image_") and body["created"] > 0 and body["inference_time_s"] > 0
    assert "peak_memory_mb" in body and body["data"][0]["revised_prompt"] == "a cat"
    url = body["data"][0]["url"]
    assert url == f"/v1/images/{body['id']}/content" and "b64_json" not in body["data"][0]
    content = httpx.get(t2i_server.base + url, timeout=10)
    assert content.headers["content-type"] == "image/jpeg" and content.content[:3] == b"\xff\xd8\xff"
    assert Image.open(io.BytesIO(content.content)).size == (32, 32)
    job = httpx.get(f"{t2i_server.url}/images/{body['id']}", timeout=10).json()
    assert job["status"] == "completed" and job["data"] == [{"url": url}] and job["expires_at"] > job["created"]
    deleted = httpx.delete(f"{t2i_server.url}/images/{body['id']}", timeout=10).json()
    assert deleted == {"id": body["id"], "object": "image.deleted", "deleted": True, "status": "deleted"}
    assert httpx.get(t2i_server.base + url, timeout=10).status_code == 404
    assert not list((t2i_server.output_dir / "files").glob(f"{body['id']}*"))


def _png_of(srv, body: dict) -> np.ndarray:
    import httpx2 as httpx

    r = httpx.post(srv.url + "/images/generations", timeout=120,
                   json={"prompt": "a red fox", "num_inference_steps": 2, "seed": 3, "response_format": "b64_json",
                         "output_format": "png", **body})
    assert r.status_code == 200, r.text
    return [np.asarray(decode(type("Item", (), item))).astype(int) for item in r.json()["data"]]


def test_sglangs_request_fields_act(t2i_server):
    """width/height win over size, size "" is the model's default, true_cfg_scale is Qwen-Image's guidance, a seed
    list gives each output its seed, output_quality/output_compression set the JPEG quality."""
    import httpx2 as httpx

    assert _png_of(t2i_server, {"size": "64x64", "width": 32, "height": 48})[0].shape == (48, 32, 3)
    assert _png_of(t2i_server, {"size": ""})[0].shape[:2] == (64, 64)  # tiny-qwen-image's default size
    small = {"size": "32x32"}
    assert np.array_equal(_png_of(t2i_server, {**small, "true_cfg_scale": 2.0})[0],
                          _png_of(t2i_server, {**small, "guidance_scale": 2.0})[0])
    pair = _png_of(t2i_server, {**small, "n": 2, "seed": [7, 11]})
    assert np.array_equal(pair[0], _png_of(t2i_server, {**small, "seed": 7})[0])
    assert np.array_equal(pair[1], _png_of(t2i_server, {**small, "seed": 11})[0])
    sizes = {}
    for quality in ({"output_quality": "low"}, {"output_compression": 100}):
        r = httpx.post(t2i_server.url + "/images/generations", timeout=120, json={
            "prompt": "a red fox", "size": "64x64", "num_inference_steps": 2, "response_format": "b64_json", **quality})
        sizes[next(iter(quality))] = len(base64.b64decode(r.json()["data"][0]["b64_json"]))
    assert sizes["output_quality"] < sizes["output_compression"]


def test_fields_sglang_and_openai_send_are_accepted_named_or_refused(t2i_server):
    import httpx2 as httpx

    def post(**fields):
        return httpx.post(t2i_server.url + "/images/generations", timeout=120, json={
            "prompt": "a red fox", "size": "32x32", "num_inference_steps": 1, "response_format": "b64_json", **fields})

    r = post(quality="exact", style="vivid", background="auto", enable_teacache=False, model="gpt-image-1")
    assert r.status_code == 200 and r.headers["x-sgld-ignored-fields"] == "quality,style,background", r.text
    teacache = post(enable_teacache=True)  # acts where the family has it: Qwen-Image has no TeaCache coefficients
    assert teacache.status_code == 400 and teacache.json()["error"]["param"] == "enable_teacache", teacache.text
    for field, value in (("upscaling_model_path", "org/esrgan"), ("enhance_prompt", True), ("diffusers_kwargs", {"a": 1})):
        r = post(**{field: value})
        assert r.status_code == 400 and "not supported yet" in r.json()["detail"], r.text
        assert r.json()["error"]["param"] == field and r.json()["error"]["code"] == "unsupported_feature"
    for field in ("perf_dump_path",):
        r = post(**{field: "/tmp/x.json"})
        assert r.status_code == 400 and "path on the server" in r.json()["detail"] and r.json()["error"]["param"] == field
    r = post(qualty="hd")
    assert r.status_code == 400 and r.json()["error"]["message"] == "unknown field 'qualty'"
    assert post(task_type="T2V").json()["error"]["param"] == "task_type"
    assert post(task_type="T2I").status_code == 200
    job = httpx.get(f"{t2i_server.url}/images/{post(model='dall-e-3').json()['id']}", timeout=10).json()
    assert job["model"] == "dall-e-3"  # any name on a one-model server, echoed
