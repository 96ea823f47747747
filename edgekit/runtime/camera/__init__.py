"""edge-camera's parts: frame sources (camera index, video file, URL, the Pi's CSI camera, image folder), the
capture thread, score smoothing, the overlay, the browser view and the recorder. The loop is separate
from the Classifier, which stays testable without a camera.

    from edgekit.runtime import Classifier
    from edgekit.runtime.camera import CameraConfig, run_camera
    run_camera(Classifier.open("model.tflite"), CameraConfig(source="0", headless=True, frames=100))
"""

from edgekit.runtime.camera._app import RunStats, check_record_path, run_camera
from edgekit.runtime.camera._config import OPTION_RANGES, CameraConfig
from edgekit.runtime.camera._sources import PICAMERA, Reconnecting, Source, open_source, source_kind

__all__ = ["OPTION_RANGES", "PICAMERA", "CameraConfig", "Reconnecting", "RunStats", "Source", "check_record_path",
           "open_source", "run_camera", "source_kind"]
