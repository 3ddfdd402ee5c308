"""Import modules of an OFFICIAL Step-Video-T2V checkout for side-by-side benchmarks.

Nothing of the official code is in this repository: point ``OFFICIAL_T2V`` (or ``--official``) at a
checkout of https://github.com/stepfun-ai/Step-Video-T2V. Its package initialiser pulls in
multi-GPU and server dependencies (xfuser, diffusers, flask), so we register light stand-ins for
exactly those imports, the way the reference notes describe, and import the network files directly.
"""

import functools
import inspect
import os
import sys
import types

from torch import nn


def _module(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _register_to_config(init):
    """Bind the constructor's arguments (defaults included) and expose them as ``self.config``."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = inspect.signature(init).bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        nn.Module.__init__(self)
        self.config = types.SimpleNamespace(**values)
        init(self, *args, **kwargs)
    return wrapper


def import_official(checkout):
    """The official ``stepvideo`` package (modules importable one by one) from ``checkout``."""
    package_dir = os.path.join(checkout, "stepvideo")
    if not os.path.isdir(package_dir):
        raise FileNotFoundError(f"{checkout} is not a Step-Video-T2V checkout (no stepvideo/ folder)")
    if "stepvideo" in sys.modules:
        return sys.modules["stepvideo"]
    _module("stepvideo", __path__=[package_dir])
    _module("stepvideo.utils", with_empty_init=lambda init: init)
    _module("stepvideo.parallel", parallel_forward=lambda fn: fn,
            get_sequence_parallel_world_size=lambda: 1, get_sequence_parallel_rank=lambda: 0)
    _module("diffusers")
    _module("diffusers.configuration_utils", ConfigMixin=object, register_to_config=_register_to_config)
    _module("diffusers.models")
    _module("diffusers.models.modeling_utils", ModelMixin=nn.Module)
    for name in ("xfuser", "xfuser.model_executor", "xfuser.model_executor.models",
                 "xfuser.model_executor.models.customized",
                 "xfuser.model_executor.models.customized.step_video_t2v"):
        _module(name, __path__=[])
    import stepvideo.modules.blocks as blocks
    import stepvideo.modules.normalization as normalization
    sys.modules["xfuser.model_executor.models.customized.step_video_t2v.blocks"] = blocks
    sys.modules["xfuser.model_executor.models.customized.step_video_t2v.normalization"] = normalization
    return sys.modules["stepvideo"]


def official_dit(checkout, config, state_dict, dtype):
    """The official StepVideoModel with ``config`` (our DiTConfig) and ``state_dict`` loaded, in ``dtype``."""
    import_official(checkout)
    from stepvideo.modules.model import StepVideoModel
    model = StepVideoModel(num_attention_heads=config.num_heads, attention_head_dim=config.head_dim,
                           in_channels=config.in_channels, out_channels=config.out_channels,
                           num_layers=config.num_layers, caption_channels=list(config.caption_channels),
                           attention_type="torch")
    model.load_state_dict(state_dict)
    return model.to(dtype).eval()


def default_checkout():
    return os.environ.get("OFFICIAL_T2V", "/tmp/official/t2v")


def official_available(checkout):
    return checkout is not None and os.path.isdir(os.path.join(checkout, "stepvideo", "modules"))

