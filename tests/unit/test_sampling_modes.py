"""Sampler and generation-mode mechanics, checked exactly with an analytic velocity model.

The oracle velocity (x - target) / sigma (ComfyUI convention: noise - data) carries any point of the
path x = (1 - sigma) * target + sigma * noise straight to ``target``: Euler on it lands exactly on
the target, so every deviation below is a mechanics bug, not model error.
"""

import pytest
import torch

from stepvideo_pack.samplers.flow_euler import cfg_combine, guidance_at, sample_flow_euler
from stepvideo_pack.samplers.flow_schedule import noise_levels, official_timesteps, partial_noise_levels, shifted
from stepvideo_pack.samplers.modes import (BACKWARD, FORWARD, bridge_window, extension_window, image_to_video,
                                           keyframe_window, sdedit_denoise)
from stepvideo_pack.samplers.video_geometry import latent_frames, pixel_frames, snap_frames, snap_size

SHAPE = (1, 4, 9, 2, 3)  # B, C, T (3 chunks), h, w


def video(seed, shape=SHAPE):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def oracle(target):
    return lambda x, sigma: (x - target) / sigma


def test_euler_on_the_oracle_lands_on_the_target():
    target, noise = video(1), video(2)
    out = sample_flow_euler(oracle(target), noise, noise_levels(8, 13.0))
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)


def test_schedule_is_the_official_one_in_noise_levels():
    timesteps, official_sigmas = official_timesteps(50, 13.0)
    torch.testing.assert_close(noise_levels(50, 13.0), 1 - official_sigmas, rtol=0, atol=1e-6)
    assert noise_levels(50, 13.0)[0] == 1 and noise_levels(50, 13.0)[-1] == 0
    assert abs(float(timesteps[1]) - 0.001567) < 1e-6  # reference value from the official scheduler


def test_cfg_combination_moves_along_cond_minus_uncond():
    target_c, target_u, noise = video(3), video(4), video(5)

    def guided(x, sigma):
        return cfg_combine(oracle(target_c)(x, sigma), oracle(target_u)(x, sigma), 9.0)

    out = sample_flow_euler(guided, noise, noise_levels(6))
    torch.testing.assert_close(out, target_u + 9.0 * (target_c - target_u), rtol=0, atol=1e-4)


def test_guidance_interval_guides_down_to_the_stop_level_then_runs_the_prompt_alone():
    target_c, target_u, noise = video(3), video(4), video(5)
    sigmas = noise_levels(6)
    stop = float(sigmas[2] + sigmas[3]) / 2  # guided steps 0, 1, 2
    unconditional_calls = []

    def interval(x, sigma):
        scale = guidance_at(sigma, 9.0, stop)
        if scale == 1.0:
            return oracle(target_c)(x, sigma)
        unconditional_calls.append(sigma)
        return cfg_combine(oracle(target_c)(x, sigma), oracle(target_u)(x, sigma), scale)

    out = sample_flow_euler(interval, noise, sigmas)
    assert unconditional_calls == [float(s) for s in sigmas[:3]]  # the prompt pass alone below ``stop``
    # the oracle lands on its target from any point, so the unguided last steps end on the prompt's target
    torch.testing.assert_close(out, target_c, rtol=0, atol=1e-4)
    assert guidance_at(0.5, 9.0) == 9.0 and guidance_at(0.0, 9.0) == 9.0  # stop 0: every step, as official


def test_known_frames_come_out_bit_identical_and_the_rest_follows_the_model():
    target, noise, given = video(6), video(7), video(8)
    mask = torch.ones(1, 1, 9, 2, 3)
    mask[:, :, [0, 4]] = 0
    seen = []

    def recording(x, sigma):
        seen.append(x[:, :, 0].clone())
        return oracle(target)(x, sigma)

    sigmas = noise_levels(5)
    out = sample_flow_euler(recording, noise, sigmas, latent=given, mask=mask)
    assert torch.equal(out[:, :, [0, 4]], given[:, :, [0, 4]])
    keep = [i for i in range(9) if i not in (0, 4)]
    torch.testing.assert_close(out[:, :, keep], target[:, :, keep], rtol=0, atol=1e-5)
    # before every model call the known frame sits on the path of the given latent at that level
    for x0, sigma in zip(seen, sigmas[:-1].tolist()):
        torch.testing.assert_close(x0, (1 - sigma) * given[:, :, 0] + sigma * noise[:, :, 0])


def test_clean_known_frames_reach_the_model_clean_and_come_out_bit_identical():
    """A DiT trained with clean context (``dit.clean_known``) sees the known latents as given at every
    noise level instead of re-noised; the result still copies them exactly."""
    target, noise, given = video(6), video(7), video(8)
    mask = torch.ones(1, 1, 9, 2, 3)
    mask[:, :, :3] = 0
    seen = []

    def recording(x, sigma):
        seen.append(x[:, :, :3].clone())
        return oracle(target)(x, sigma)

    out = sample_flow_euler(recording, noise, noise_levels(5), latent=given, mask=mask, clean_known=True)
    assert len(seen) == 5 and all(torch.equal(x, given[:, :, :3]) for x in seen)
    assert torch.equal(out[:, :, :3], given[:, :, :3])
    torch.testing.assert_close(out[:, :, 3:], target[:, :, 3:], rtol=0, atol=1e-5)


def test_cfg_and_mask_together_keep_known_frames_exact():
    target_c, target_u, noise, given = video(9), video(10), video(11), video(12)
    mask = torch.ones(1, 1, 9, 2, 3)
    mask[:, :, :3] = 0

    def guided(x, sigma):
        return cfg_combine(oracle(target_c)(x, sigma), oracle(target_u)(x, sigma), 5.0)

    out = sample_flow_euler(guided, noise, noise_levels(7), latent=given, mask=mask)
    assert torch.equal(out[:, :, :3], given[:, :, :3])
    torch.testing.assert_close(out[:, :, 3:], (target_u + 5.0 * (target_c - target_u))[:, :, 3:], rtol=0, atol=1e-4)


@pytest.mark.parametrize("strength", [0.1, 0.35, 0.6, 0.9])
def test_sdedit_starts_at_the_noise_level_given_by_strength(strength):
    sigmas = partial_noise_levels(20, 13.0, sdedit_denoise(strength, 13.0))
    assert len(sigmas) == 21
    assert abs(float(sigmas[0]) - strength) < 1e-6 and float(sigmas[-1]) == 0
    assert torch.all(sigmas[1:] < sigmas[:-1])


def test_sdedit_strength_zero_returns_the_input_and_one_ignores_it():
    target, noise, given_a, given_b = video(13), video(14), video(15), video(16)
    assert len(partial_noise_levels(20, 13.0, sdedit_denoise(0.0))) == 0
    assert torch.equal(sample_flow_euler(oracle(target), noise, torch.zeros(0), latent=given_a), given_a)
    full = partial_noise_levels(20, 13.0, sdedit_denoise(1.0))
    out_a = sample_flow_euler(oracle(target), noise, full, latent=given_a)
    out_b = sample_flow_euler(oracle(target), noise, full, latent=given_b)
    assert torch.equal(out_a, out_b)


def test_sdedit_result_moves_from_input_towards_model_as_strength_rises():
    target, noise, given = video(17), video(18), video(19)
    # a model that only partially "knows" the answer: it pulls towards the target at rate 1/sigma at
    # every level, so a short (low-strength) run keeps more of the input than a long one
    distances = []
    for strength in (0.2, 0.5, 0.8):
        sigmas = partial_noise_levels(10, 13.0, sdedit_denoise(strength))
        lazy = lambda x, sigma: 0.5 * oracle(target)(x, sigma)  # noqa: E731
        out = sample_flow_euler(lazy, noise, sigmas, latent=given)
        distances.append(float((out - given).norm()))
    assert distances[0] < distances[1] < distances[2]


def test_forward_extension_joins_with_the_clip_bit_identical():
    clip, target, noise = video(20), video(21, (1, 4, 9, 2, 3)), video(22, (1, 4, 9, 2, 3))
    window = extension_window(clip, new_chunks=2, overlap_chunks=1, direction=FORWARD)
    assert window.samples.shape[2] == 9 and torch.equal(window.samples[:, :, :3], clip[:, :, -3:])
    sampled = sample_flow_euler(oracle(target), noise, noise_levels(4), latent=window.samples, mask=window.mask)
    joined = window.join(sampled)
    assert joined.shape[2] == 9 + 6
    assert torch.equal(joined[:, :, :9], clip)
    torch.testing.assert_close(joined[:, :, 9:], target[:, :, 3:], rtol=0, atol=1e-5)


def test_backward_extension_puts_new_chunks_first():
    clip = video(23)
    window = extension_window(clip, new_chunks=1, overlap_chunks=2, direction=BACKWARD)
    assert window.samples.shape[2] == 3 + 6
    assert window.mask[0, 0, :, 0, 0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    sampled = torch.randn_like(window.samples)
    joined = window.join(sampled)
    assert joined.shape[2] == 3 + 9
    assert torch.equal(joined[:, :, 3:], clip) and torch.equal(joined[:, :, :3], sampled[:, :, :3])


def test_extension_rejects_partial_chunks_and_bad_overlap():
    with pytest.raises(ValueError, match="whole 17-frame chunks"):
        extension_window(video(24, (1, 4, 7, 2, 3)), 1)
    with pytest.raises(ValueError, match="overlap_chunks"):
        extension_window(video(25), 1, overlap_chunks=4)


def test_bridge_between_two_clips_keeps_both():
    a, b = video(26), video(27, (1, 4, 6, 2, 3))
    window = bridge_window(a, b, new_chunks=2, overlap_chunks=1)
    assert window.samples.shape[2] == 3 + 6 + 3
    sampled = torch.randn_like(window.samples)
    joined = window.join(sampled)
    assert joined.shape[2] == 9 + 6 + 6
    assert torch.equal(joined[:, :, :9], a) and torch.equal(joined[:, :, -6:], b)
    assert torch.equal(joined[:, :, 9:15], sampled[:, :, 3:9])


def test_keyframes_pin_the_first_and_a_trailing_single_latent():
    first, last = video(28, (1, 4, 1, 2, 3)), video(29, (1, 4, 1, 2, 3))
    window = keyframe_window(first, last, chunks=2)
    assert window.samples.shape[2] == 7 and pixel_frames(7) == 35
    target, noise = video(30, (1, 4, 7, 2, 3)), video(31, (1, 4, 7, 2, 3))
    out = window.join(sample_flow_euler(oracle(target), noise, noise_levels(3), latent=window.samples,
                                        mask=window.mask))
    assert torch.equal(out[:, :, :1], first) and torch.equal(out[:, :, -1:], last)
    torch.testing.assert_close(out[:, :, 1:-1], target[:, :, 1:-1], rtol=0, atol=1e-5)


def test_image_to_video_pins_latent_frame_zero():
    image = video(32, (2, 4, 1, 2, 3))
    samples, mask = image_to_video(image, chunks=2)
    assert samples.shape == (2, 4, 6, 2, 3) and torch.equal(samples[:, :, :1], image)
    assert mask[:, :, 0].sum() == 0 and mask[:, :, 1:].min() == 1


def test_geometry_follows_the_official_snapping():
    assert [snap_frames(f) for f in (1, 16, 17, 33, 204, 205)] == [1, 1, 17, 17, 204, 204]
    assert [latent_frames(f) for f in (1, 17, 34, 102, 204)] == [1, 3, 6, 18, 36]
    assert [pixel_frames(t) for t in (1, 3, 6, 36, 4, 7)] == [1, 17, 34, 204, 18, 35]
    assert [snap_size(s) for s in (15, 16, 544, 999)] == [16, 16, 544, 992]
    assert float(shifted(torch.tensor(0.5), 13.0)) == pytest.approx(13 * 0.5 / (1 + 12 * 0.5))


def test_long_video_plan_covers_the_length_with_bounded_windows():
    from stepvideo_pack.samplers.modes import long_video_plan
    assert long_video_plan(12, 4, 1) == [4, 3, 3, 2]        # 4 + 3 + 3 + 2 = 12 chunks, windows <= 4 chunks
    assert long_video_plan(3, 4, 1) == [3]
    assert long_video_plan(10, 4, 2, start_chunks=2) == [2, 2, 2, 2]  # each window = 2 known + 2 new
    with pytest.raises(ValueError, match="smaller than the window"):
        long_video_plan(10, 2, 2)


def test_chained_extensions_keep_every_earlier_latent():
    """The long-video loop (modes.chain_windows, which the node runs) with an oracle velocity: every window
    continues exactly the known target, earlier latents are never touched, and the whole target comes out."""
    from stepvideo_pack.samplers.modes import chain_windows, long_video_plan
    target = video(40, (1, 4, 30, 2, 3))
    clips = []

    def sample(samples, mask, index):
        known = 0 if mask is None else int((mask[0, 0, :, 0, 0] == 0).sum())  # the clip's last chunk(s)
        start = 0 if mask is None else clips[-1].shape[2] - known
        goal = target[:, :, start:start + samples.shape[2]]
        return sample_flow_euler(oracle(goal), video(41 + index, samples.shape), noise_levels(3),
                                 latent=None if mask is None else samples, mask=mask)

    def keep(clip):
        if clips:
            assert torch.equal(clip[:, :, :clips[-1].shape[2]], clips[-1])
        clips.append(clip.clone())

    out = chain_windows(long_video_plan(10, 4, 1), sample, lambda chunks: torch.zeros(1, 4, 3 * chunks, 2, 3),
                        overlap_chunks=1, on_window=keep)
    assert [c.shape[2] for c in clips] == [12, 21, 30] and out.shape[2] == 30
    torch.testing.assert_close(out, target, rtol=0, atol=1e-4)
