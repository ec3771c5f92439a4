"""skdistill: scikit-learn estimators for classifying and segmenting cryo-ET subtomograms.

3D CNNs trained with skorch behind ``fit`` / ``predict`` / ``predict_proba`` / ``score``,
with knowledge distillation into small student networks.
"""

from . import metrics
from .estimators import Cnn3DClassifier, Cnn3DSegmenter, DistilledClassifier, DistilledSegmenter
from .model_files import load_model, save_model
from .pruning import PrunedClassifier, PrunedSegmenter
from .tiling import segment_tomogram

__version__ = "0.1.0.dev0"

__all__ = [
    "Cnn3DClassifier",
    "Cnn3DSegmenter",
    "DistilledClassifier",
    "DistilledSegmenter",
    "PrunedClassifier",
    "PrunedSegmenter",
    "__version__",
    "load_model",
    "metrics",
    "save_model",
    "segment_tomogram",
]
