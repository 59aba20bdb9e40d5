"""The sprite feature net and its training, the feature space of spritediff's quality metrics.

The names below are imported on first use (PEP 562), so `spritediff train-features --help` loads no torch.
"""
__all__ = ["DEFAULT_FEATURES", "FORMAT", "FeatureModel", "FeatureTrainConfig", "NEAR_DUPLICATE_RMS",
           "SpriteFeatureNet", "held_out_split", "load_features", "save_features", "sprite_groups", "to_float",
           "train_feature_net"]

_MODULES = {"DEFAULT_FEATURES": "files", "FORMAT": "files", "FeatureModel": "files", "load_features": "files",
            "save_features": "files", "to_float": "files", "SpriteFeatureNet": "net", "NEAR_DUPLICATE_RMS": "split",
            "held_out_split": "split", "sprite_groups": "split", "FeatureTrainConfig": "config",
            "train_feature_net": "training"}


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value
