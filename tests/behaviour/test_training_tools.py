"""The tools that made the shipped small model: the synthetic data is a pure function of its seed, and
the training script (in its --quick form: every stage, a few steps each) writes an official-layout
model folder that the users' loaders read, plus its loss logs."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import torch

from research import behaviour_metrics
from research import direction_task
from research import synthetic_data as sd
from research import train_dit
from research import train_small_model
from research.detectors import detect, shape_mask
from stepvideo_pack.model_loaders.dit_loader import load_dit
from stepvideo_pack.model_loaders.text_encoding import StepVideoTextEncoder
from stepvideo_pack.model_loaders.vae_loader import load_vae

TOOLS = os.path.dirname(sd.__file__)


def test_clips_are_a_pure_function_of_seed_and_index():
    first = sd.render_clip(sd.sample_clip_spec(7, 3), 64)
    again = sd.render_clip(sd.sample_clip_spec(7, 3), 64)
    other = sd.render_clip(sd.sample_clip_spec(7, 4), 64)
    assert first.shape == (35, 64, 64, 3) and np.array_equal(first, again) and not np.array_equal(first, other)


def test_captions_are_bilingual_and_match_the_clip():
    spec = sd.sample_clip_spec(0, 0, action="left", colour=0, shape=0)
    assert sd.caption(spec, "en").startswith("a red circle moves to the left")
    assert sd.caption(spec, "zh").endswith("红色圆形向左移动")
    found = detect(sd.render_clip(spec, 128)[:17])
    assert (found.colour, found.shape, found.action) == ("red", "circle", "left")


def test_quick_training_run_writes_a_loadable_official_layout(tmp_path):
    out, work = tmp_path / "model", tmp_path / "work"
    run = subprocess.run([sys.executable, os.path.join(TOOLS, "train_small_model.py"), "--quick", "--seed", "1",
                          "--out", str(out), "--work", str(work)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    dit = load_dit(str(out / "transformer"))
    vae = load_vae(str(out / "vae" / "vae_v2.safetensors"))
    assert dit.config.in_channels == vae.config.decoder.z_channels == 16
    assert dit.clean_known  # the last phases train clean known latents, and the checkpoint says so
    embeddings = StepVideoTextEncoder(str(out / "step_llm"), str(out / "hunyuan_clip")).encode(
        ["a red circle moves to the left", "红色圆形向左移动"])
    assert torch.isfinite(embeddings.llm_states.float()).all()
    with open(work / "logs" / "dit.csv", encoding="utf-8") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == list(range(15))  # the seven DiT phases (3, 2, 2, 2, 2, 2 and 2 steps) in one log


def test_ideal_denoiser_recovers_the_clip_and_pays_for_a_wrong_attribute():
    clips = torch.eye(4, 64) * 8.0  # four far-apart "clips"
    noised = (1 - 0.2) * clips[1:2] + 0.2 * torch.randn(1, 64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(behaviour_metrics.ideal_x0(noised, 0.2, clips).float(), clips[1:2], atol=1e-3)
    wrong = torch.tensor([[True, False, True, True]])  # told it is not clip 1
    assert float(((behaviour_metrics.ideal_x0(noised, 0.2, clips, wrong) - clips[1]) ** 2).mean()) > 1.0
    pure_noise = torch.randn(1, 64, generator=torch.Generator().manual_seed(1))  # sigma 1: no evidence
    assert torch.allclose(behaviour_metrics.ideal_x0(pure_noise, 1.0, clips).float(), clips.mean(0, keepdim=True))


def test_metrics_only_replaces_the_measurements_it_reruns(tmp_path, monkeypatch):
    """``behaviour_metrics --only`` re-measures the named entries of the JSON report and keeps the rest."""
    report = tmp_path / "behaviour.json"
    report.write_text('{"kept": {"value": 1}, "rerun": {"value": 2}}', encoding="utf-8")
    monkeypatch.setattr(behaviour_metrics, "TinyModel", lambda weights: "model")
    monkeypatch.setitem(behaviour_metrics.MEASUREMENTS, "rerun", lambda model: {"value": 3, "model": model})
    behaviour_metrics.main(["--only", "rerun", "--out", str(report)])
    result = json.loads(report.read_text(encoding="utf-8"))
    assert result["kept"] == {"value": 1}
    assert result["rerun"]["value"] == 3 and result["rerun"]["model"] == "model"
    assert "seconds" in result["rerun"]


def test_metrics_of_other_weights_do_not_overwrite_the_shipped_report(tmp_path, monkeypatch):
    """Measuring an experimental model (--weights elsewhere, no --out) prints, and leaves research/logs alone."""
    shipped_report = os.path.join(TOOLS, "logs", "behaviour.json")
    before = os.path.getmtime(shipped_report)
    monkeypatch.setattr(behaviour_metrics, "TinyModel", lambda weights: weights)
    monkeypatch.setitem(behaviour_metrics.MEASUREMENTS, "rerun", lambda model: {"model": model})
    behaviour_metrics.main(["--only", "rerun", "--weights", str(tmp_path)])
    assert os.path.getmtime(shipped_report) == before
    assert "rerun" not in json.loads(open(shipped_report, encoding="utf-8").read())


def test_direction_task_clips_move_as_captioned_and_a_short_run_reports_the_swap(tmp_path, capsys):
    """research/direction_task.py (TRAINING.md experiments 10-16): its clips move the captioned direction by
    the asked distance (a red circle, or the dataset's colours and shapes with --varied), and a two-step
    run prints the direction swap and saves a state dict that a second run can start from."""
    for index in range(8):
        for varied in (False, True):
            spec = direction_task.task_spec(index, 0.5, varied)
            found = detect(sd.render_clip(spec, 128))
            assert (found.colour, found.shape, found.action) == (spec.colour_name, sd.SHAPE_NAMES[spec.shape],
                                                                 spec.action)
            assert varied or (spec.colour_name, spec.shape) == ("red", 0)
            travelled = np.subtract(spec.end, spec.start)
            assert abs(np.abs(travelled).sum() - 0.5) < 1e-9 and min(spec.start + spec.end) > 0
    assert direction_task.caption(spec, "up", full=True) == sd.describe(spec.colour, spec.shape, "up")
    saved = tmp_path / "task.pt"
    direction_task.main(["--clips", "4", "--steps", "2", "--every", "1", "--sigma-range", "0.4,0.9", "--varied",
                         "--captions", "full", "--heads", "2", "--save", str(saved)])
    printed = capsys.readouterr().out
    assert printed.count("dir") == 2 * len(direction_task.EVAL_SIGMAS) and "step 2 loss" in printed
    direction_task.main(["--clips", "4", "--steps", "0", "--heads", "2", "--init", str(saved)])
    assert "s0.75:" in capsys.readouterr().out
    run = direction_task.main(["--clips", "4", "--steps", "0", "--heads", "2", "--init", str(saved), "--generate", "5",
                               "--varied", "--captions", "full", "--seeds", "2"])
    hits, found = run[5.0]
    assert len(found) == 2 and 0 <= hits <= 2 and set(found) <= set(sd.ACTION_WEIGHTS)
    assert "generation cfg 5.0: moves as asked" in capsys.readouterr().out
    low, high = train_dit.sample_sigma(1000, torch.Generator().manual_seed(0), (0.4, 0.9)).aminmax()
    assert 0.4 <= float(low) < 0.41 and 0.89 < float(high) <= 0.9


def test_shape_cell_weights_mark_the_cells_the_shape_covers():
    """Stage dit_shapes weights the loss on the latent cells a shape touches (plain backgrounds only):
    every 16-pixel cell the shape covers by a quarter or more gets 1 + weight, no cell free of it does."""
    for index in range(6):
        spec = sd.sample_clip_spec(5, index, background="plain", shape=index % 3)
        frames = sd.render_clip(spec, 128)[:17]
        latent = train_small_model.reference_latents(train_small_model.clip_video(frames))  # (3, z, 8, 8)
        weights = train_dit.shape_cell_weights(latent[None], 4.0)[0, 0, 0]  # latent frame 0 = pixel frame 0
        assert set(weights.unique().tolist()) == {1.0, 5.0}
        coverage = torch.from_numpy(shape_mask(frames[:1])[0].astype(np.float32)).reshape(8, 16, 8, 16).mean((1, 3))
        assert (weights[coverage >= 0.25] == 5.0).all() and (weights[coverage == 0] == 1.0).all(), (coverage, weights)


def test_clean_known_variants_keep_the_modes_latents_clean_and_out_of_the_loss():
    """With clean_known, a share of the samples gets the latents a mode keeps known (image-to-video,
    keyframes, extension) clean: the DiT sees the data there, and only the other latents are scored."""
    rng = np.random.default_rng(0)
    known = train_dit.known_latents("AB", 400, rng, 0.5)
    rows = {tuple(torch.nonzero(k.flatten()).flatten().tolist()) for k in known}
    assert rows == {(), (0, 1, 2), (3, 4, 5), (0,)}
    assert 150 < int(known.flatten(1).any(1).sum()) < 250
    assert train_dit.known_latents("AB", 4, rng, 0.0) is None

    data, noise = torch.randn(2, 6, 4, 2, 2), torch.randn(2, 6, 4, 2, 2)
    known = torch.zeros(2, 6, 1, 1, 1, dtype=torch.bool)
    known[0, :3] = True
    seen = []

    def model(x, t, **_):
        seen.append(x.float())
        return torch.zeros_like(x)

    sigma = torch.tensor([0.7, 0.3])
    loss = train_dit.flow_matching_loss(model, data, noise, sigma, {}, known=known)
    assert torch.equal(seen[0][0, :3], data[0, :3])
    assert not torch.allclose(seen[0][0, 3:], data[0, 3:], atol=1e-2)
    squared = (data - noise) ** 2
    expected = torch.cat([squared[0, 3:].flatten(), squared[1].flatten()]).mean()
    torch.testing.assert_close(loss, expected)


def test_join_phase_weights_the_seam_and_draws_its_window_mix():
    """dit_join: the latent next to a known chunk weighs 1 + seam_weight (forward and backward
    extension), nothing else changes; the window shares given are kept and the rest keep their ratios."""
    known = torch.zeros(3, 6, 1, 1, 1, dtype=torch.bool)
    known[0, :3] = True  # forward extension: chunk A known
    known[1, 3:] = True  # backward: chunk B known
    weights = train_dit.seam_weights(known, 4.0).flatten(1)
    assert weights.tolist() == [[1, 1, 1, 5, 1, 1], [1, 1, 5, 1, 1, 1], [1] * 6]
    assert torch.equal(train_dit.seam_weights(torch.ones(2, 3, 1, 1, 1, dtype=torch.bool), 4.0),
                       torch.ones(2, 3, 1, 1, 1))  # one-chunk windows have no seam

    data, noise = torch.randn(3, 6, 4, 2, 2), torch.randn(3, 6, 4, 2, 2)
    loss = train_dit.flow_matching_loss(lambda x, t, **_: torch.zeros_like(x), data, noise, torch.full((3,), 0.5), {},
                                        known=known, seam_weight=4.0, autocast=False)
    w = (train_dit.seam_weights(known, 4.0) * ~known).expand(-1, -1, 4, 2, 2)
    torch.testing.assert_close(loss, (w * (data - noise) ** 2).mean() / w.float().mean())

    names = list(train_dit.WINDOWS)
    probs = train_dit.window_probabilities({"AB": 0.5})
    assert abs(probs[names.index("AB")] - 0.5) < 1e-12 and abs(probs.sum() - 1) < 1e-12
    base = train_dit.window_probabilities()
    others = [i for i, n in enumerate(names) if n != "AB"]
    np.testing.assert_allclose(probs[others] / probs[others].sum(), base[others] / base[others].sum())
    rng = np.random.default_rng(0)
    sets = {tuple(torch.nonzero(k.flatten()).flatten().tolist())
            for k in train_dit.known_latents("AB", 300, rng, 1.0, {"AB": ((0, 1, 2), (3, 4, 5))})}
    assert sets == {(0, 1, 2), (3, 4, 5)}
