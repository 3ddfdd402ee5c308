"""Saving frames as an H.264 MP4 with the workflow embedded (drag it back into ComfyUI to get the graph)."""

import os

import torch

import folder_paths

from ..media.mp4 import open_video, write_mp4
from ..model_loaders.memory import human_bytes
from .host import CATEGORY, require_finite, save_metadata
from .memory import FREE_FRACTION, cpu_free_bytes


try:  # ComfyUI >= 0.3.30 has a VIDEO type
    from comfy_api.input_impl import VideoFromFile
except ImportError:
    VideoFromFile = None

class StepVideoSaveVideo:
    DISPLAY_NAME = "StepVideo Save Video (MP4)"
    DESCRIPTION = ("Writes the frames as an H.264 MP4 into ComfyUI's output folder, with the prompt and the workflow "
                   "embedded like ComfyUI's own savers: drop the MP4 onto the canvas to get the graph back. Shows "
                   "a preview and outputs a VIDEO where the host has that type.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("VIDEO",) if VideoFromFile is not None else ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Video frames [frames, height, width, 3] in 0..1."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 120.0, "step": 0.5,
                                  "tooltip": "Frames per second (official: 25)."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51,
                                "tooltip": "H.264 quality: lower is better and larger; 17-23 is typical."}),
                "filename_prefix": ("STRING", {"default": "StepVideo/video",
                                               "tooltip": "Path under ComfyUI/output; a counter is appended."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, images, fps, crf, filename_prefix, prompt=None, extra_pnginfo=None):
        require_finite("StepVideo Save Video", fps=fps)
        height, width = images.shape[1], images.shape[2]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height)
        filename = f"{name}_{counter:05}_.mp4"
        path = os.path.join(folder, filename)
        write_mp4(path, images, fps=fps, crf=crf, metadata=save_metadata(prompt, extra_pnginfo))
        ui = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
        result = (VideoFromFile(path),) if VideoFromFile is not None else ()
        return {"ui": ui, "result": result}


class StepVideoLoadVideo:
    DISPLAY_NAME = "StepVideo Load Video"
    DESCRIPTION = ("Reads a video file from ComfyUI's input folder as IMAGE frames (through the ffmpeg of "
                   "imageio-ffmpeg), for video extension, SDEdit and bridging. Only the frames asked for are "
                   "decoded, streamed; a clip that would not fit in free RAM is refused before decoding.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        # the videos in input/ as the host's own loaders list them (by MIME type: .mp4, .webm, .mkv, .mov, ...)
        files = sorted(folder_paths.filter_files_content_types(os.listdir(folder_paths.get_input_directory()),
                                                               ["video"]))
        return {"required": {
            "video": (files or ["(put a video into ComfyUI/input)"],),
            "skip_frames": ("INT", {"default": 0, "min": 0, "max": 100000,
                                    "tooltip": "Frames to skip at the start (ffmpeg skips them, nothing is kept)."}),
            "frame_limit": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "0 = all frames."}),
        }}

    @classmethod
    def IS_CHANGED(cls, video, skip_frames, frame_limit):
        path = folder_paths.get_annotated_filepath(video)
        return f"{os.path.getmtime(path)}:{os.path.getsize(path)}" if os.path.exists(path) else video

    def load(self, video, skip_frames, frame_limit):
        path = folder_paths.get_annotated_filepath(video)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"StepVideo Load Video: {path} does not exist (put the file into ComfyUI/input).")
        info, frames = open_video(path, skip_frames, frame_limit)
        width, height = info["width"], info["height"]
        per_frame = width * height * 3 * 5  # the float32 IMAGE frame and the uint8 frame it is made from
        fit = int(cpu_free_bytes() * FREE_FRACTION) // per_frame
        left = None if info["frames"] is None else max(0, info["frames"] - skip_frames)  # the container's estimate
        bounds = [n for n in (frame_limit or None, left) if n is not None]
        wanted = min(bounds) if bounds else None

        def refuse(count):
            frames.close()
            return MemoryError(
                f"StepVideo Load Video: {video}: {count:,} frames of {width}x{height} need "
                f"{human_bytes(count * per_frame)} of RAM, but {human_bytes(cpu_free_bytes())} is available: at most "
                f"{fit:,} frames fit; set frame_limit (and skip_frames) to load a part of the clip.")

        if wanted is not None and wanted > fit:
            raise refuse(wanted)
        decoded = []
        for frame in frames:
            if len(decoded) == fit:
                raise refuse(len(decoded) + 1)
            decoded.append(frame)
        if not decoded:
            raise ValueError(f"StepVideo Load Video: no frames left in {path} after skipping {skip_frames}.")
        images = torch.empty((len(decoded), height, width, 3), dtype=torch.float32)
        for i in range(len(decoded)):
            images[i] = torch.from_numpy(decoded[i].copy()).float() / 255.0
            decoded[i] = None  # keep the peak at the output plus one decoded frame
        return (images, float(info["fps"] or 25.0))
