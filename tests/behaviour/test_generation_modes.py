"""Generation modes with the shipped small model: image-to-video, extension, long video, keyframe
interpolation, SDEdit and tiled decoding, each with one measured criterion (research/behaviour_metrics.py).

Thresholds sit below the values measured on the shipped weights (quoted) and well above what a
broken mode produces (quoted: the baseline each test compares with).
"""

import pytest

from research import behaviour_metrics as bm


def test_image_to_video_keeps_the_first_frame(tiny):
    """First latent pinned (modes.image_to_video with T2V weights). Measured: first-frame PSNR 27.3-31.0 dB,
    equal (to 0.01 dB) to the VAE's own round trip of the image; a generated, unpinned first frame of
    the same scene scores ~12-17 dB (SDEdit at strength 0.9: 12.5 dB)."""
    result = bm.image_to_video_fidelity(tiny)
    assert min(result["first_frame_psnr"]) >= 25.0, result
    for pinned, round_trip in zip(result["first_frame_psnr"], result["vae_image_psnr"]):
        assert abs(pinned - round_trip) < 0.1, result


def test_the_join_ratio_tells_a_continuation_from_a_cut(tiny):
    """The yardstick of the extension tests (bm.join_ratio: frame change across the join / median 4-frame
    step between key frames) on the four test clips. Measured: the VAE round trip of the true 34 frames
    0.09-0.10; the first chunk followed by an unrelated clip of the same prompt 1.72-9.01 (the same with
    the VAE that held each key frame, whose non-zero frame changes were the ratio's yardstick then:
    0.09-0.10, 1.71-9.02)."""
    result = bm.extension_baselines(tiny)
    assert max(result["ground_truth_join_ratio"]) <= 0.2, result
    assert min(result["cut_join_ratio"]) >= 1.5, result


def test_extension_continues_the_clip_smoothly(tiny):
    """Forward extension of the four clips by one chunk (one chunk known, the known part is bit-identical:
    tests/unit) at the recommended extension guidance, CFG 1 (bm.EXTENSION_CFG). Criterion: join ratio
    at most 0.5, half a typical 4-frame motion step. Measured: 0.38 / 0.36 / 0.31 / 0.37; the new chunk
    moves as prompted in 4 / 4 (with the VAE that held each key frame 3 / 4, and 0.44 / 0.39 / 0.31 / 0.37
    by the yardstick of that VAE, whose median also counted the seam blend's small steps; a chunk that
    stands still, the failure a continuous but frozen extension would show, scores 0)."""
    result = bm.extension_join(tiny)
    assert max(result["join_ratio"]) <= 0.5, result
    assert result["direction_followed"] >= 2, result


def test_extension_follows_a_changed_prompt(tiny):
    """The same extensions prompted to move the opposite way (CFG 1: the text still steers). Measured: the
    new chunk turns in 4 / 4, join ratio 0.33-0.63 (a turn is a real change of motion, still far from a
    cut's 1.72-9.01)."""
    result = bm.extension_join(tiny, turn=True)
    assert result["direction_followed"] >= 3, result
    assert max(result["join_ratio"]) <= 1.0, result


@pytest.mark.xfail(strict=True, reason="not yet learnt by the small model (TRAINING.md, experiments 23-24): at CFG 3 "
                                       "on every step the join is 0.37-0.60, between a continuation (0.1) and a cut")
def test_extension_at_text_to_video_guidance_continues_smoothly(tiny):
    """As test_extension_continues_the_clip_smoothly, at the text-to-video guidance (CFG 3 on every step).
    Measured: 0.60 / 0.47 / 0.37 / 0.40 (by the yardstick of the VAE that held each key frame 0.75 / 0.55 /
    0.39 / 0.47; the weights before stage dit_join 1.50 / 2.15 / 0.96 / 1.50): the guided new chunk's
    colour fringes and grain make the join jump by more than half a step."""
    result = bm.extension_join(tiny, cfg=bm.CFG)
    assert max(result["join_ratio"]) <= 0.5, result


def test_long_video_colour_drift_per_chunk(tiny):
    """Four chunks (68 frames) by chained extension. Measured: shape colour drift <= 0.008, background
    <= 0.006 (held-frame VAE: 0.013, 0.006) (largest RGB channel mean change vs chunk 1, on [0, 1]); detector colour blue in 4/4 chunks.
    A change to a neighbouring palette colour moves a channel mean by more than 0.3."""
    result = bm.long_video_drift(tiny)
    assert result["frames"] == 68
    assert max(result["shape_drift"]) <= 0.1 and max(result["background_drift"]) <= 0.1, result
    assert result["colours"].count("blue") >= 3, result


@pytest.fixture(scope="module")
def keyframes(tiny):
    return bm.keyframe_interpolation(tiny)


def test_keyframe_interpolation_pins_both_ends(keyframes):
    """First and last images given (18 frames), 4 clips. Measured: first frame 25.7-30.5 dB; last frame
    25.3-29.3 dB, lower because the official chunk-seam blend keeps 0.6 of the pinned frame and mixes in
    0.4 of the generated frame before it (web/docs/StepVideoKeyframes.md). Baseline: the same decoded
    last frame against the FIRST image (what an unpinned end resembles, the background being shared)
    scores 15.9-19.8 dB, 8.4-11.2 dB (mean 9.7) below its score against the last image."""
    result = keyframes
    firsts, lasts = result["end_psnr"][0::2], result["end_psnr"][1::2]
    assert min(firsts) >= 23.0, result
    margins = [last - unpinned for last, unpinned in zip(lasts, result["last_frame_vs_first_image_psnr"])]
    assert min(margins) > 0 and sum(margins) / len(margins) >= 1.5, (margins, result)


def test_keyframe_interpolation_moves_the_shape_halfway_by_the_middle_frame(keyframes):
    """Where the shape is at the middle frame (frame 8 of 18) along the straight path from its place in
    the first image to its place in the last: 0 = start, 1 = end; a steady motion gives 8/17 = 0.47.
    Measured: 0.55 / 0.66 / 0.58 / 0.59, with the known latents given clean as the checkpoint asks. The
    weights before stage dit_join with them re-noised: 0.87 / 1.09 / 1.11 / -0.18 (at the end already,
    or off the path), the weights before those 1.03-1.12 and -0.54. Criterion: within [0.25, 0.75] for every clip."""
    fractions = keyframes["middle_fraction"]
    assert all(0.25 <= f <= 0.75 for f in fractions), fractions


def test_sdedit_similarity_falls_as_strength_rises(tiny):
    """SDEdit of a red shape with a blue prompt at strengths 0.1 ... 0.9. Measured PSNR to the input:
    21.3, 20.1, 19.2, 17.0, 14.1 dB (held-frame VAE: 21.2, 20.1, 19.2, 17.0, 14.0)."""
    scores = bm.sdedit_similarity(tiny)["psnr"]
    assert all(b <= a + 0.5 for a, b in zip(scores, scores[1:])), scores
    assert scores[0] - scores[-1] >= 6.0, scores


def test_tiled_decode_matches_untiled(tiny):
    """A generated 34-frame clip decoded whole and in four overlapping 48-pixel tiles.
    Measured: 62.2 dB. A tiling bug (misplaced or unblended tile) gives well under 30 dB."""
    assert bm.tiled_decode(tiny)["psnr"] >= 40.0



@pytest.fixture(scope="module")
def demo_clip(tiny):
    return bm.demo_smoothness(tiny)


def test_demo_clip_shows_a_new_picture_on_every_frame(demo_clip):
    """The demo's clip (workflows/api/text_to_video_embedded.json, 34 frames): the VAE fills the three
    frames between two key frames by interpolation instead of holding each key frame for four frames.
    Criterion: at least 30 of the 34 frames are new pictures (a change above bm.CHANGE_MIN). Measured:
    34 of 34; with the VAE that held each key frame 11 of 34 (three in four changes exactly zero)."""
    assert demo_clip["frames"] == 34, demo_clip
    assert demo_clip["distinct_pictures"] >= 30, demo_clip


@pytest.mark.xfail(strict=True, reason="the DiT's own motion is uneven: its key-to-key steps in the demo clip "
                                       "range 0.022-0.061 (largest 1.88x the median) and its two chunks meet "
                                       "with a jump of about one key step, which the official seam blend "
                                       "spreads into frames 16-18; measured 2.01x")
def test_demo_clip_has_no_jump_above_twice_the_median_change(demo_clip):
    """No frame-to-frame change of the demo's clip is larger than twice the median one (issue 27's
    smoothness target). Measured: largest 0.0167 (frame 17 -> 18, right after the chunk seam) against a
    median of 0.0083, 2.01x; the interpolated frames inside a 4-frame segment change by equal amounts
    (within 0.0005), so what is left comes from the sampled key frames, not from the decoder. The MP4 that
    scripts/demo.sh saves (8-bit H.264) reads 1.92. With the VAE that held each key frame the median
    change was 0 (ratio infinite)."""
    assert demo_clip["largest_over_median_change"] <= 2.0, demo_clip
