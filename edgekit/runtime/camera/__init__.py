"""edge-camera's parts: frame sources (camera index, video file, URL, the Pi's CSI camera, image folder), the
capture thread, score smoothing, the overlay, the browser view and the recorder; several sources at once
(``_multi``), MQTT and Home Assistant (``MqttOptions``, with the extra ``edgekit[mqtt]``) and the systemd unit
(``Service``). The loop is separate from the Classifier, which stays testable without a camera.

    from edgekit.runtime import Classifier
    from edgekit.runtime.camera import CameraConfig, run_camera
    run_camera(Classifier.open("model.tflite"), CameraConfig(source="0", headless=True, frames=100))
    run_camera(Classifier.open("model.tflite"), CameraConfig(source=("0", "1"), mqtt=MqttOptions.parse(
        "mqtt://broker.local/home/shelf", homeassistant=True)))
"""

from edgekit.runtime.camera._app import RunStats, check_record_path, run_camera
from edgekit.runtime.camera._config import OPTION_RANGES, CameraConfig
from edgekit.runtime.camera._mqtt_options import MqttOptions
from edgekit.runtime.camera._service import Service, invoking_user, service_args
from edgekit.runtime.camera._service import install as install_service
from edgekit.runtime.camera._service import uninstall as uninstall_service
from edgekit.runtime.camera._sources import PICAMERA, Reconnecting, Source, open_source, source_kind

__all__ = ["OPTION_RANGES", "PICAMERA", "CameraConfig", "MqttOptions", "Reconnecting", "RunStats", "Service",
           "Source", "check_record_path", "install_service", "invoking_user", "open_source", "run_camera",
           "service_args", "source_kind", "uninstall_service"]
