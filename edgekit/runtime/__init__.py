"""The TensorFlow-free runtime: run .tflite and .onnx image classifiers.

    from edgekit.runtime import Classifier
    clf = Classifier.open("model_int8.tflite")
    clf.classify("cat.jpg", top_k=3)  # -> [Prediction(label, index, score), ...]

    from edgekit.runtime import Localizer, open_model
    Localizer.open("box_int8.tflite").detect("cat.jpg")  # -> [Detection(label, index, score, box)], box in pixels
    open_model("any.tflite")  # a Localizer when the file's contract says localize, else a Classifier

Imports only NumPy, OpenCV, Pillow and the interpreter it uses.
"""

from edgekit.runtime.backends import BACKENDS, Backend, open_backend
from edgekit.runtime.classifier import Classifier, Prediction, collect_images
from edgekit.runtime.localizer import Detection, Localizer, open_model
from edgekit.runtime.tensors import TensorInfo

__all__ = ["BACKENDS", "Backend", "Classifier", "Detection", "Localizer", "Prediction", "TensorInfo", "collect_images",
           "open_backend", "open_model"]
