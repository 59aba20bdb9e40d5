"""`spritediff serve` over real HTTP, on a tiny random model: the API's answers agree with spritediff.sample and the
latent API, downloads are made in memory, every bad field is a one-line 4xx, no client value becomes a path."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from conftest import tiny_model
from PIL import Image

import spritediff
from spritediff import render
from spritediff.samplers import SAMPLERS
from spritediff.serve.app import create_app
from spritediff.serve.client import APIError, PlaygroundClient
from spritediff.serve.config import ServeConfig
from spritediff.serve.images import data_url
from spritediff.serve.server import run_in_thread

EXACT = ServeConfig(precision="fp32")  # spritediff.sample(precision="fp32") is the reference


MIX = (0.1, 0.4, 0.1, 0.3, 0.1)  # a training class mix, so that the 'mix' context is served


@pytest.fixture(scope="module")
def model():
    model = tiny_model()
    model.class_mix = MIX
    return model


@pytest.fixture(scope="module")
def client(model):
    with run_in_thread(create_app(model, "cpu", EXACT)) as url:
        yield PlaygroundClient(url, timeout=60)


def reference(model, sampler, steps, n, context, seed, guidance=0.5, **options) -> np.ndarray:
    return spritediff.sample(model, sampler, steps, n, context, guidance, seed, frames=False, precision="fp32",
                             **options).images


def assert_within_one_grey_level(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_info_describes_the_model_every_sampler_and_the_limits(client, model):
    info = client.get_json("/api/info")
    assert info["model"]["classes"] == list(model.classes) and info["model"]["size"] == 16
    assert info["model"]["class_mix"] == list(MIX)
    assert list(info["samplers"]) == list(SAMPLERS)
    assert info["samplers"]["ddim"]["default_steps"] == 20
    assert info["samplers"]["ddim"]["options"]["eta"]["high"] == 1.0
    assert info["limits"]["max_n"] == EXACT.max_n and info["precision"] == "fp32"


def test_page_works_offline_with_every_control_explained(client):
    status, headers, page = client.request("GET", "/")
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    texts = [page.decode()] + [client.request("GET", f"/static/{name}")[2].decode() for name in ("app.js", "style.css")]
    for text in texts:
        assert "http://" not in text and "https://" not in text and "cdn" not in text.lower()
    html = texts[0]
    for tag in ("<select", "<input", "<button"):  # every control has a tooltip (title) on it or on its label
        assert html.count(tag) <= html.count("title="), tag


@pytest.mark.parametrize("sampler, steps, options, context", [
    ("ddim", 20, {"eta": 0.5}, "random"),
    ("ddpm", 40, {}, {"hero": 1, "food": 0.6}),
    ("dpmpp-2m", 8, {}, None),
    ("ddpm", 10, {}, "mix"),
])
def test_sample_gives_spritediff_sample_s_sprites(client, model, sampler, steps, options, context):
    events = client.sample(sampler=sampler, steps=steps, n=5, seed=11, context=context, options=options)
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["accepted", "running"] and kinds[-1] == "done" and "frame" in kinds
    spec = context if not isinstance(context, dict) else ",".join(f"{k}={v}" for k, v in context.items())
    expected = spritediff.sample(model, sampler, steps, 5, spec, 0.5, 11, frames=False, precision="fp32", **options)
    assert events[-1]["nfe"] == expected.nfe
    assert_within_one_grey_level(client.download_npy(events[-1]["id"]), expected.images)


def test_frames_stream_x_t_beside_x0_hat_and_downloads_are_made_in_memory(client):
    events = client.sample(sampler="ddim", steps=20, n=10, seed=2)
    frame = next(event for event in events if event["type"] == "frame")
    picture = Image.open(io.BytesIO(_png(frame["image"])))
    assert picture.size == (2 * (8 * 17 + 1) + 4, 2 * 17 + 1)  # x_t | gap | x0_hat, two rows, 1:1 (the page zooms)
    done = events[-1]
    images = client.download_npy(done["id"])
    assert images.shape == (10, 16, 16, 3)
    status, headers, body = client.request("GET", f"/api/results/{done['id']}/grid.png")
    assert status == 200 and headers["content-type"] == "image/png"
    assert 'filename="spritediff-ddim20-seed2-grid.png"' in headers["content-disposition"]
    assert Image.open(io.BytesIO(body)).size == render.grid_image(images, 8, 4).size
    gif = Image.open(io.BytesIO(client.download(done["id"], "denoise.gif")))
    assert gif.format == "GIF" and gif.n_frames == 21  # 20 steps, then the final sprites held
    assert Image.open(io.BytesIO(_png(done["grid"]))).size == render.grid_image(images, 8, 4).size
    assert len(done["sprites"]) == 10


def _png(url: str) -> bytes:
    return base64.b64decode(url.split(",", 1)[1])


@pytest.mark.parametrize("path", [
    "/api/results/../../etc/passwd", "/api/results/%2e%2e%2f%2e%2e%2fsetup.py/grid.png",
    "/api/results/0123456789abcdef0123456789abcdef/grid.png", "/api/results/not-an-id/samples.npy",
    "/static/../cli.py", "/static/%2e%2e%2fcli.py", "/static/index.html", "/static/", "/static/app.js%00",
    "/etc/passwd", "/api/results/0123456789abcdef0123456789abcdef/..%2f..%2fconfig.py",
])
def test_no_client_value_becomes_a_path(client, path):
    status, headers, body = client.request("GET", path)
    assert status == 404
    assert json.loads(body)["error"]


def test_a_result_s_id_is_only_a_key(client):
    done = client.sample(n=1, steps=2)[-1]
    for kind in ("grid.png", "samples.npy", "denoise.gif"):
        assert client.request("GET", f"/api/results/{done['id']}/{kind}")[0] == 200
    for kind in ("run.json", "..", "grid.PNG"):
        assert client.request("GET", f"/api/results/{done['id']}/{kind}")[0] == 404


BAD_SAMPLES = [
    ({"sampler": "dalle"}, "unknown sampler"),
    ({"sampler": 3}, "unknown sampler"),
    ({"context": "dragon"}, "unknown class"),
    ({"context": {"dragon": 1}}, "unknown class"),
    ({"context": {"hero": "lots"}}, "must be a finite number"),
    ({"context": "hero=1e9"}, "weights must be between"),
    ({"context": ["hero"]}, "context must be"),
    ({"context": "hero," * 200}, "longer than"),
    ({"steps": 0}, "steps must be between 1 and 500"),
    ({"steps": 501}, "steps must be between 1 and 500"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"steps": "20"}, "steps must be an integer"),
    ({"steps": True}, "steps must be an integer"),
    ({"n": 0}, "n must be between"),
    ({"n": 10_000}, "n must be between"),
    ({"seed": -1}, "seed must be between"),
    ({"seed": 2**64}, "seed must be between"),
    ({"guidance": -0.5}, "guidance must be between"),
    ({"guidance": 1e308}, "guidance must be between"),
    ({"options": {"eta": 2}}, "eta must be between"),
    ({"options": {"eta": "x"}}, "eta must be a finite number"),
    ({"sampler": "ddpm", "options": {"eta": 0.5}}, "takes no option eta"),
    ({"options": [1]}, "options must be an object"),
    ({"frames": "yes"}, "frames must be true or false"),
    ({"model": "/etc/passwd"}, "unknown field 'model'"),
    ({"out": "x"}, "unknown field 'out'"),
]


@pytest.mark.parametrize("payload, message", BAD_SAMPLES)
def test_bad_sample_fields_are_a_one_line_400(client, payload, message):
    _assert_one_line_error(client, "/api/sample", payload, 400, message)


def _assert_one_line_error(client, path, payload, status, message):
    with pytest.raises(APIError) as caught:
        client.post_json(path, payload)
    assert caught.value.status == status
    assert message in caught.value.message
    assert "\n" not in caught.value.message and "Traceback" not in caught.value.message


BAD_RACES = [({"solver": "ddim"}, "few-step solver"), ({"solver": "nope"}, "unknown sampler"),
             ({"n": 99}, "n must be between"), ({"steps": 5}, "unknown field 'steps'")]


@pytest.mark.parametrize("payload, message", BAD_RACES)
def test_bad_race_fields_are_a_one_line_400(client, payload, message):
    _assert_one_line_error(client, "/api/race", payload, 400, message)


def _sprite(size: int = 16, mode: str = "RGB", seed: int = 0) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, len(mode)), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _big_png() -> str:
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG", pnginfo=_padding(100_000))
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _padding(size: int):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("padding", "x" * size)
    return info


BAD_EDITS = [
    ({"op": "sharpen"}, "op must be one of"),
    ({"op": "reconstruct"}, "image is required"),
    ({"op": "reconstruct", "image": "data:image/jpeg;base64,AAAA"}, "must be a PNG data URL"),
    ({"op": "reconstruct", "image": "not base64 !"}, "not valid base64"),
    ({"op": "reconstruct", "image": "aGVsbG8="}, "not a PNG image"),
    ({"op": "reconstruct", "image": _sprite(32)}, "is 32x32 pixels"),
    ({"op": "reconstruct", "image": _sprite(mode="L")}, "not RGB"),
    ({"op": "reconstruct", "image": _sprite(mode="RGBA")}, "not RGB"),
    ({"op": "reconstruct", "image": _big_png()}, "upload limit"),
    ({"op": "reconstruct", "image": _sprite(), "method": "magic"}, "method must be one of"),
    ({"op": "reconstruct", "image": _sprite(), "steps": 1000}, "steps must be between"),
    ({"op": "reconstruct", "image": _sprite(), "context": "random"}, "does not apply"),
    ({"op": "interpolate", "image": _sprite(), "image_b": _sprite(), "context": "mix"}, "does not apply"),
    ({"op": "reconstruct", "image": _sprite(), "n": 2}, "unknown field 'n'"),
    ({"op": "interpolate", "image": _sprite()}, "image_b is required"),
    ({"op": "interpolate", "image": _sprite(), "image_b": _sprite(), "frames": 1}, "frames must be between"),
    ({"op": "vary", "image": _sprite(), "strength": 1.5}, "strength must be between"),
    ({"op": "vary", "image": _sprite(), "n": 50}, "n must be between"),
    ({"op": "vary", "image": _sprite(), "context": "dragon"}, "unknown class"),
    ({"op": "inpaint", "image": _sprite()}, "mask is required"),
    ({"op": "inpaint", "image": _sprite(), "mask": [0] * 256}, "no pixel to fill in"),
    ({"op": "inpaint", "image": _sprite(), "mask": [1] * 255}, "mask must be 256 numbers"),
    ({"op": "inpaint", "image": _sprite(), "mask": [True] * 256}, "mask must be 256 numbers"),
    ({"op": "inpaint", "image": _sprite(), "mask": _sprite(8)}, "is 8x8 pixels"),
    ({"op": "inpaint", "image": _sprite(), "mask": [1] * 256, "resample": 0}, "resample must be between"),
]


@pytest.mark.parametrize("payload, message", BAD_EDITS)
def test_bad_edit_fields_are_a_one_line_400(client, payload, message):
    _assert_one_line_error(client, "/api/edit", payload, 400, message)


@pytest.mark.parametrize("body, content_type, status, message", [
    (b"{", "application/json", 400, "not valid JSON"),
    (b'{"n": NaN}', "application/json", 400, "not valid JSON"),
    (b'{"guidance": Infinity}', "application/json", 400, "not valid JSON"),
    (b"[1, 2]", "application/json", 400, "must be a JSON object"),
    (b"\xff\xfe", "application/json", 400, "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "not valid JSON"),
    (b'{"n": 1}', "text/plain", 415, "Content-Type: application/json"),
    (b'{"n": 1}', "", 415, "Content-Type: application/json"),
    (b'{"pad": "' + b"x" * 300_000 + b'"}', "application/json", 413, "larger than"),
])
def test_bad_bodies_are_refused_before_any_work(client, body, content_type, status, message):
    headers = {"Content-Type": content_type} if content_type else {}
    got, _, answer = client.request("POST", "/api/sample", body, headers)
    assert got == status
    assert message in json.loads(answer)["error"]


def test_wrong_method_and_unknown_route_are_json_4xx(client):
    assert client.request("GET", "/api/sample")[0] == 405
    assert json.loads(client.request("GET", "/api/nothing")[2]) == {"error": "not found"}


def test_a_foreign_host_header_is_refused(client):
    """DNS rebinding: a page on another site that resolves its name to 127.0.0.1 cannot drive the server."""
    status, _, _ = client.request("GET", "/api/info", headers={"Host": "attacker.example:7860"})
    assert status == 400
    assert client.request("GET", "/api/info", headers={"Host": "localhost:7860"})[0] == 200


def test_race_lanes_share_the_noise_and_ddim_finishes_before_ddpm(client, model):
    events = client.race(n=2, seed=5, context="hero")
    done = [event for event in events if event["type"] == "done"]
    order = [event["lane"] for event in done]
    assert sorted(order) == ["ddim", "ddpm", "dpmpp-2m"]
    assert order.index("ddim") < order.index("ddpm") and order.index("dpmpp-2m") < order.index("ddpm")
    by_lane = {event["lane"]: event for event in done}
    assert {lane: event["nfe"] for lane, event in by_lane.items()} == {"ddpm": 500, "ddim": 20, "dpmpp-2m": 10}
    assert_within_one_grey_level(client.download_npy(by_lane["ddim"]["id"]),
                                 reference(model, "ddim", 20, 2, "hero", 5))
    assert {event["lane"] for event in events if event["type"] == "frame"} == {"ddim", "ddpm", "dpmpp-2m"}


def test_edit_operations_agree_with_the_latent_api(client, model):
    sprite = reference(model, "ddim", 10, 2, None, 3)
    a, b = data_url(sprite[0]), data_url(sprite[1])
    exact = client.edit(op="reconstruct", image=a, method="exact", steps=10)
    assert exact["errors"][0] < 1e-8
    assert_within_one_grey_level(client.download_npy(exact["id"]), sprite[:1])
    varied = client.edit(op="vary", image=a, strength=0.5, context="food", n=3, seed=4, steps=20)
    expected = spritediff.edit(model, sprite[0], strength=0.5, context="food", n=3, seed=4, steps=20)
    assert varied["t0"] == expected.t0 == 250 and len(varied["images"]) == 3
    assert_within_one_grey_level(client.download_npy(varied["id"]), expected.images)
    mask = np.zeros((16, 16), int)
    mask[4:10, 4:10] = 1
    filled = client.edit(op="inpaint", image=a, mask=mask.ravel().tolist(), n=2, steps=10, resample=2)
    fills = client.download_npy(filled["id"])
    assert (fills[:, mask == 0] == sprite[0][mask == 0]).all()
    strip = client.edit(op="interpolate", image=a, image_b=b, frames=5, steps=10, method="exact")
    assert len(strip["images"]) == 5 and len(strip["norms"]) == 5
    ends = client.download_npy(strip["id"])[[0, -1]]
    assert_within_one_grey_level(ends, sprite)


def test_a_model_without_classes_refuses_every_context_before_any_work():
    from spritediff.checkpoint import SpriteModel
    from spritediff.models.context_unet import ContextUnet
    from spritediff.schedule import Schedule

    classless = SpriteModel(ContextUnet(3, 8, 0, 16).eval(), Schedule.course(), (), {})
    with run_in_thread(create_app(classless, "cpu", ServeConfig(precision="fp32"))) as url:
        client = PlaygroundClient(url)
        for context in ("random", "mix", "hero", {"hero": 1}):
            with pytest.raises(APIError) as caught:
                client.sample(sampler="ddim", steps=2, n=1, context=context)
            assert caught.value.status == 400 and "this model has no classes" in caught.value.message, context
        assert client.sample(sampler="ddim", steps=2, n=1)[-1]["type"] == "done"


def test_the_race_says_why_ddpm_draws_other_sprites_from_the_same_noise(client):
    page = client.request("GET", "/")[2].decode()
    assert "DDPM adds fresh noise at every step" in page


def tiny_student(model) -> spritediff.SpriteModel:
    """A stand-in 2-call student of `model` (its weights read as v): what the race lane needs, not a good one."""
    from spritediff.student import StudentSchedule

    student = tiny_model(seed=1)
    student.prediction_type, student.class_mix = "v", model.class_mix
    student.student = StudentSchedule((500, 250, 0), 0.5)
    return student


def test_the_race_gets_a_fourth_lane_for_a_student_with_its_own_sprites(model):
    student = tiny_student(model)
    with run_in_thread(create_app(model, "cpu", EXACT, student=student)) as url:
        lane_client = PlaygroundClient(url, timeout=60)
        info = lane_client.get_json("/api/info")
        assert info["race"]["student"] == {"lane": "student", "steps": 2, "guidance": 0.5, "name": "student"}
        events = lane_client.race(n=2, seed=5, context="hero", guidance=1)
        done = {event["lane"]: event for event in events if event["type"] == "done"}
        assert sorted(done) == ["ddim", "ddpm", "dpmpp-2m", "student"] and done["student"]["nfe"] == 2
        assert done["student"]["settings"]["guidance"] == 0.5 and done["ddim"]["settings"]["guidance"] == 1
        assert_within_one_grey_level(lane_client.download_npy(done["student"]["id"]),
                                     spritediff.sample(student, n=2, context="hero", seed=5, frames=False,
                                                       precision="fp32").images)
        assert_within_one_grey_level(lane_client.download_npy(done["ddim"]["id"]),
                                     reference(model, "ddim", 20, 2, "hero", 5, guidance=1))


def test_the_playground_serves_a_student_only_as_a_lane_beside_its_teacher(model):
    with pytest.raises(spritediff.SpriteDiffError, match="race the student with --student"):
        create_app(tiny_student(model), "cpu", EXACT)
    with pytest.raises(spritediff.SpriteDiffError, match="not one"):
        create_app(model, "cpu", EXACT, student=tiny_model())
