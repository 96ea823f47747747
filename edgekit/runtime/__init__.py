"""The TensorFlow-free runtime: run .tflite and .onnx image classifiers.

    from edgekit.runtime import Classifier
    clf = Classifier.open("model_int8.tflite")
    clf.classify("cat.jpg", top_k=3)  # -> [Prediction(label, index, score), ...]

Imports only NumPy, OpenCV, Pillow and the interpreter it uses.
"""

from edgekit.runtime.backends import BACKENDS, Backend, open_backend
from edgekit.runtime.classifier import Classifier, Prediction, collect_images
from edgekit.runtime.tensors import TensorInfo

__all__ = ["BACKENDS", "Backend", "Classifier", "Prediction", "TensorInfo", "collect_images", "open_backend"]
