"""ComfyUI entry point of the Step-Video node pack: node registration and model-folder setup only."""
