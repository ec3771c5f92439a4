"""scikit-learn estimators that own skorch-trained 3D CNNs."""

from ._classifier import Cnn3DClassifier
from ._distilled import DistilledClassifier
from ._segmenter import Cnn3DSegmenter, DistilledSegmenter

__all__ = ["Cnn3DClassifier", "Cnn3DSegmenter", "DistilledClassifier", "DistilledSegmenter"]
