"""scikit-learn estimators that own skorch-trained 3D CNNs."""

from ._classifier import Cnn3DClassifier
from ._distilled import DistilledClassifier

__all__ = ["Cnn3DClassifier", "DistilledClassifier"]
