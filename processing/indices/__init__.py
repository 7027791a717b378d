"""Domain indices computed from readings: what commune staff actually read.

Each module is a pure function (polars frames in, polars frames out) writing one measurement of
docs/measurements.md, and registers that measurement in the catalogue
(``sensors.catalogue.register_index``) as a Telegraf plugin registers itself: importing this
package loads them all. docs/indices.md cites the source of every threshold.
"""

from processing.indices.air import atmo_daily, eaqi_hourly, hourly_means
from processing.indices.building import building_energy_daily
from processing.indices.camera import camera_hourly
from processing.indices.network import network_health
from processing.indices.scales import ATMO, EAQI, Scale
from processing.indices.traffic import traffic_congestion, traffic_profile

__all__ = [
    "ATMO",
    "EAQI",
    "Scale",
    "atmo_daily",
    "building_energy_daily",
    "camera_hourly",
    "eaqi_hourly",
    "hourly_means",
    "network_health",
    "traffic_congestion",
    "traffic_profile",
]
