"""The sprite feature net and its training, the feature space of spritediff's quality metrics."""
from .files import DEFAULT_FEATURES, FORMAT, FeatureModel, load_features, save_features, to_float
from .net import SpriteFeatureNet
from .split import NEAR_DUPLICATE_RMS, held_out_split, sprite_groups
from .training import FeatureTrainConfig, train_feature_net

__all__ = ["DEFAULT_FEATURES", "FORMAT", "FeatureModel", "FeatureTrainConfig", "NEAR_DUPLICATE_RMS",
           "SpriteFeatureNet", "held_out_split", "load_features", "save_features", "sprite_groups", "to_float",
           "train_feature_net"]
