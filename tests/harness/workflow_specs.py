"""The example workflows shipped in workflows/ (UI format) and workflows/api/ (API format).

Model names are the folder names the README asks users to use under ComfyUI/models/stepvideo/:
``stepvideo-t2v``, ``stepvideo-t2v-turbo`` and ``stepvideo-ti2v`` (official downloads dropped in as is),
and ``stepvideo-tiny`` for the embedded small model (weights/stepvideo-tiny; ``scripts/comfy_host.py serve``
offers it under that name).
Input files are looked up in ComfyUI/input/ under the names in INPUT_FILES.
"""

import json

from .server import EMBEDDED_MODEL_NAME
from .workflow_graph import Graph

T2V, TURBO, TI2V = "stepvideo-t2v", "stepvideo-t2v-turbo", "stepvideo-ti2v"
EMBEDDED = EMBEDDED_MODEL_NAME
INPUT_FILES = {"image": "stepvideo_first_frame.png", "last_image": "stepvideo_last_frame.png",
               "video": "stepvideo_clip.mp4", "video_b": "stepvideo_clip_b.mp4", "latent": "stepvideo_video.latent"}
PROMPT_EN = "A red circle moves from the left to the right over a calm blue background."
PROMPT_ZH = "一只可爱的橘猫在阳光下的草地上追逐一只蓝色的蝴蝶，镜头缓慢推进。"


def _loaders(graph, model=T2V):
    dit = graph.add("StepVideoDiTLoader", model_name=model)
    text = graph.add("StepVideoTextEncoderLoader", step_llm=model, hunyuan_clip=model)
    vae = graph.add("StepVideoVAELoader", vae_name=model)
    return dit, text, vae


def _encode(graph, text, prompt=PROMPT_EN, magic="T2V official"):
    return graph.add("StepVideoTextEncode", text_encoder=text[0], prompt=prompt, negative_prompt="", magic=magic)


def _sample(graph, dit, cond, latent, steps=50, cfg=9.0, shift=13.0, denoise=1.0):
    """StepVideo Sampler with the official base-model settings."""
    return graph.add("StepVideoSampler", model=dit[0], positive=cond[0], negative=cond[1], latent=latent, seed=1234,
                     steps=steps, cfg=cfg, shift=shift, denoise=denoise)


def _sample_window(graph, dit, cond, vae, window, name):
    """Sample a mode's window, put it back into its clip (Join Window), save latent and video."""
    joined = graph.add("StepVideoJoinWindow", samples=_sample(graph, dit, cond, window[0])[0])
    _save(graph, vae, joined[0], name)


def _save(graph, vae, latent, prefix):
    """SaveLatent first (a failed decode never loses the sampling run), then decode and save the MP4."""
    graph.add("SaveLatent", samples=latent, filename_prefix=f"StepVideo/{prefix}")
    frames = graph.add("StepVideoVAEDecode", vae=vae[0], samples=latent)
    graph.add("StepVideoSaveVideo", images=frames[0], filename_prefix=f"StepVideo/{prefix}")
    return frames


def text_to_video(name="text_to_video", model=T2V, steps=50, cfg=9.0, shift=13.0, title="Step-Video text to video",
                  prompt=PROMPT_ZH):
    g = Graph(name, title, f"{steps} steps, CFG {cfg}, shift {shift}, 544x992, 204 frames (official settings).")
    dit, text, vae = _loaders(g, model)
    cond = _encode(g, text, prompt)
    empty = g.add("StepVideoEmptyLatent", width=992, height=544, frames=204, batch_size=1)
    latent = _sample(g, dit, cond, empty[0], steps, cfg, shift)
    _save(g, vae, latent[0], name)
    return g


def text_to_video_embedded():
    """The embedded small model at the settings it was trained for (research/TRAINING.md):
    128x128, 34 frames, 25 steps, CFG 3, shift 5, no magic suffixes, text encoders on the CPU.
    scripts/demo.py queues this file."""
    g = Graph("text_to_video_embedded", "Step-Video text to video (embedded small model)",
              "weights/stepvideo-tiny at its trained settings: 128x128, 34 frames, 25 steps, CFG 3, shift 5. "
              "It draws one coloured shape moving as the prompt says (English or Chinese).")
    dit = g.add("StepVideoDiTLoader", model_name=EMBEDDED, shift=5.0)
    text = g.add("StepVideoTextEncoderLoader", step_llm=EMBEDDED, hunyuan_clip=EMBEDDED, device="cpu")
    vae = g.add("StepVideoVAELoader", vae_name=EMBEDDED)
    cond = _encode(g, text, "a red circle moves to the right", magic="none")
    empty = g.add("StepVideoEmptyLatent", width=128, height=128, frames=34, batch_size=1)
    latent = g.add("StepVideoSampler", model=dit[0], positive=cond[0], negative=cond[1], latent=empty[0], seed=0,
                   steps=25, cfg=3.0, shift=5.0, denoise=1.0)
    _save(g, vae, latent[0], "text_to_video_embedded")
    return g


def text_to_image():
    g = Graph("text_to_image", "Step-Video text to image (1 frame)", "frames = 1: one latent frame, one image.")
    dit, text, vae = _loaders(g)
    cond = _encode(g, text)
    empty = g.add("StepVideoEmptyLatent", width=992, height=544, frames=1, batch_size=1)
    latent = _sample(g, dit, cond, empty[0])
    g.add("SaveLatent", samples=latent[0], filename_prefix="StepVideo/text_to_image")
    image = g.add("StepVideoVAEDecode", vae=vae[0], samples=latent[0])
    g.add("SaveImage", images=image[0], filename_prefix="StepVideo/text_to_image")
    return g


def ksampler_text_to_video():
    g = Graph("ksampler_text_to_video", "Step-Video with the stock KSampler",
              "The DiT is a standard MODEL: KSampler (euler / simple) with ModelSamplingSD3 shift 13.")
    dit, text, vae = _loaders(g)
    shifted = g.add("ModelSamplingSD3", model=dit[0], shift=13.0)
    cond = _encode(g, text)
    empty = g.add("StepVideoEmptyLatent", width=992, height=544, frames=204, batch_size=1)
    latent = g.add("KSampler", model=shifted[0], seed=1234, steps=50, cfg=9.0, sampler_name="euler",
                   scheduler="simple", positive=cond[0], negative=cond[1], latent_image=empty[0], denoise=1.0)
    _save(g, vae, latent[0], "ksampler_text_to_video")
    return g


def image_to_video():
    g = Graph("image_to_video", "Step-Video image to video",
              "TI2V weights: official image condition + motion score. T2V weights: known first frame.")
    dit, text, vae = _loaders(g, TI2V)
    image = g.add("LoadImage", image=INPUT_FILES["image"])
    cond = _encode(g, text, magic="TI2V official")
    i2v = g.add("StepVideoImageToVideo", model=dit[0], vae=vae[0], positive=cond[0], negative=cond[1],
                image=image[0], width=992, height=544, frames=102, motion_score=5.0, batch_size=1)
    latent = _sample(g, dit, i2v, i2v[2])
    _save(g, vae, latent[0], "image_to_video")
    return g


def extend_video():
    g = Graph("extend_video", "Step-Video video extension",
              "Continue a clip: its last chunk stays known, new frames are generated, Join Window returns the "
              "whole clip (original latents bit-identical). Set direction to backward to add frames before it.")
    dit, text, vae = _loaders(g)
    clip = g.add("StepVideoLoadVideo", video=INPUT_FILES["video"], skip_frames=0, frame_limit=0)
    encoded = g.add("StepVideoVAEEncode", vae=vae[0], images=clip[0])
    cond = _encode(g, text)
    window = g.add("StepVideoExtendVideo", clip=encoded[0], new_frames=68, overlap_chunks=1, direction="forward")
    _sample_window(g, dit, cond, vae, window, "extend_video")
    return g


def long_video():
    g = Graph("long_video", "Step-Video long video (chained extensions)",
              "Any length in windows of bounded memory; the finished part is saved after every window.")
    dit, text, vae = _loaders(g)
    cond = _encode(g, text)
    latent = g.add("StepVideoLongVideo", model=dit[0], positive=cond[0], negative=cond[1], width=992, height=544,
                   total_frames=408, window_frames=204, overlap_chunks=1, seed=1234, steps=50, cfg=9.0, shift=13.0)
    _save(g, vae, latent[0], "long_video")
    return g


def interpolate_keyframes():
    g = Graph("interpolate_keyframes", "Step-Video frame interpolation (first and last frame)",
              "17 x chunks + 1 frames with both ends pinned (the last frame is a trailing one-latent chunk).")
    dit, text, vae = _loaders(g)
    first = g.add("LoadImage", image=INPUT_FILES["image"])
    last = g.add("LoadImage", image=INPUT_FILES["last_image"])
    cond = _encode(g, text)
    window = g.add("StepVideoKeyframes", vae=vae[0], first_image=first[0], last_image=last[0], width=992, height=544,
                   frames=69)
    _sample_window(g, dit, cond, vae, window, "interpolate_keyframes")
    return g


def bridge_clips():
    g = Graph("bridge_clips", "Step-Video: join two clips with generated frames",
              "The end of clip A and the start of clip B stay known; the frames between are generated.")
    dit, text, vae = _loaders(g)
    clip_a = g.add("StepVideoLoadVideo", video=INPUT_FILES["video"], skip_frames=0, frame_limit=0)
    clip_b = g.add("StepVideoLoadVideo", video=INPUT_FILES["video_b"], skip_frames=0, frame_limit=0)
    latent_a = g.add("StepVideoVAEEncode", vae=vae[0], images=clip_a[0])
    latent_b = g.add("StepVideoVAEEncode", vae=vae[0], images=clip_b[0])
    cond = _encode(g, text)
    window = g.add("StepVideoBridgeClips", clip_a=latent_a[0], clip_b=latent_b[0], new_frames=34, overlap_chunks=1)
    _sample_window(g, dit, cond, vae, window, "bridge_clips")
    return g


def sdedit_video():
    g = Graph("sdedit_video", "Step-Video video to video (SDEdit)",
              "Noise the clip to the level 'strength' and sample from there with a new prompt.")
    dit, text, vae = _loaders(g)
    clip = g.add("StepVideoLoadVideo", video=INPUT_FILES["video"], skip_frames=0, frame_limit=0)
    edit = g.add("StepVideoSDEdit", vae=vae[0], images=clip[0], strength=0.6, shift=13.0)
    cond = _encode(g, text, PROMPT_ZH)
    sampled = _sample(g, dit, cond, edit[0], denoise=edit[1])
    _save(g, vae, sampled[0], "sdedit_video")
    return g


def decode_saved_latent():
    g = Graph("decode_saved_latent", "Step-Video: decode a saved latent (tiled)",
              "Decode a LATENT saved by another run (move it from output/ to input/), tiled to fit small GPUs.")
    vae = g.add("StepVideoVAELoader", vae_name=T2V)
    latent = g.add("LoadLatent", latent=INPUT_FILES["latent"])
    frames = g.add("StepVideoVAEDecode", vae=vae[0], samples=latent[0], tiling="on", tile_px=256, overlap_px=64)
    g.add("StepVideoSaveVideo", images=frames[0], filename_prefix="StepVideo/decoded")
    return g


def all_graphs():
    return [
        text_to_video(),
        text_to_video_embedded(),
        text_to_image(),
        text_to_video("text_to_video_turbo", TURBO, steps=12, cfg=5.0, shift=17.0,
                      title="Step-Video Turbo text to video", prompt=PROMPT_EN),
        ksampler_text_to_video(),
        image_to_video(),
        extend_video(),
        long_video(),
        interpolate_keyframes(),
        bridge_clips(),
        sdedit_video(),
        decode_saved_latent(),
    ]


def render_workflow_files(object_info):
    """{path relative to workflows/: JSON text} of every workflow in both formats, the nodes' inputs read
    from the server's /object_info (scripts/build_workflows.py writes them; the integration tests compare)."""
    files = {}
    for graph in all_graphs():
        files[f"{graph.name}.json"] = json.dumps(graph.ui(object_info), indent=1, ensure_ascii=False) + "\n"
        files[f"api/{graph.name}.json"] = json.dumps(graph.api(object_info), indent=1, ensure_ascii=False) + "\n"
    return files
