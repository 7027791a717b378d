"""The LoRaWAN translation without servers: the codec sandbox's limits, the device map's errors,
malformed events, and how decoded keys reach (or not) the contract."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ingest.lorawan import LorawanDecoder, LorawanSettings
from sensors.communes import CommuneRegistry
from sensors.lorawan.codecs import CodecError, JavaScriptCodec, decode_cayenne_lpp
from sensors.lorawan.devicemap import DeviceMap, DeviceMapError
from smartcity.cli import main
from smartcity.settings import load_settings
from tests.lorawan_fixtures import DEVICE_MAP, SAMPLES, codec_path, sample

REGISTRY = CommuneRegistry.load()
TTS_TOPIC = SAMPLES["tts_up_raw"]


def _decoder(map_text: str | None = None, tmp: Path | None = None) -> LorawanDecoder:
    settings = LorawanSettings(device_map=DEVICE_MAP)
    if map_text is None:
        return LorawanDecoder(REGISTRY, settings)
    assert tmp is not None
    path = tmp / "devices.toml"
    path.write_text(map_text, "utf-8")
    return LorawanDecoder(REGISTRY, settings.model_copy(update={"device_map": path}))


def _traffic_map(script: Path, limits: str = "") -> str:
    return f"""
[profiles.p]
codec = "javascript"
script = "{script}"
{limits}
[profiles.p.fields]
vehicles = "intensity"
speed = "averageVehicleSpeed"

[devices.70B3D57ED0058A11]
insee = "78172"
family = "traffic"
device_id = "trafic-rue-de-paris"
profile = "p"
"""


@pytest.mark.parametrize(
    ("codec", "says"),
    [("hostile-loop.js", "time limit exceeded"), ("hostile-memory.js", "memory limit exceeded")],
)
def test_a_hostile_codec_fails_its_uplink_within_its_limits_and_the_ingestor_goes_on(
    tmp_path: Path, codec: str, says: str
) -> None:
    limits = "codec_time_limit_s = 0.05\ncodec_memory_limit_mb = 8"
    decoder = _decoder(_traffic_map(codec_path(codec), limits), tmp_path)
    started = time.process_time()
    decoded = decoder.decode(TTS_TOPIC, sample("tts_up_raw"))
    # The limit is on CPU time: wall time on a loaded machine says nothing.
    assert time.process_time() - started < 5
    assert [error.reason for error in decoded.errors] == ["codec_error"]
    assert says in decoded.errors[0].detail
    assert (decoded.insee, decoded.device_id) == ("78172", "trafic-rue-de-paris")
    # The radio metadata of the uplink is still kept; no reading is invented.
    assert [reading.family for reading in decoded.readings] == ["lorawan_radio"]


def test_a_codec_context_is_rebuilt_after_a_failure() -> None:
    source = codec_path("traffic-counter.js").read_text("utf-8")
    codec = JavaScriptCodec(source, name="traffic", time_limit_s=0.05)
    with pytest.raises(CodecError, match="unknown fPort 3"):
        codec.decode(bytes(6), 3)
    with pytest.raises(CodecError, match="expected 6 bytes, got 2"):
        codec.decode(b"\x00\x01", 10)
    assert codec.decode(bytes([0, 0, 1, 0, 0, 50]), 10) == {"vehicles": 256, "speed": 50}


def test_a_codec_cannot_reach_python_or_the_host() -> None:
    codec = JavaScriptCodec(
        "function decodeUplink(i) { return {data: {req: typeof require, proc: typeof process,"
        " imp: typeof std, os: typeof os}}; }",
        name="probe",
    )
    assert codec.decode(b"", 1) == {
        "req": "undefined",
        "proc": "undefined",
        "imp": "undefined",
        "os": "undefined",
    }


def test_cayenne_lpp_frames_are_read_and_a_truncated_one_is_a_codec_error() -> None:
    assert decode_cayenne_lpp(bytes.fromhex("0167011002687f")) == {"temperature_1": 27.2, "humidity_2": 63.5}
    with pytest.raises(CodecError, match="not a Cayenne LPP frame"):
        decode_cayenne_lpp(bytes.fromhex("016701"))


def test_unmapped_decoded_keys_are_refused_as_unknown_fields_and_ignored_ones_are_dropped() -> None:
    decoder = _decoder()
    payload = sample("chirpstack_up_decoded", {'"no2": 31.2': '"no2": 31.2, "vocIndex": 112'})
    decoded = decoder.decode(SAMPLES["chirpstack_up_decoded"], payload)
    assert [(error.reason, error.field) for error in decoded.errors] == [("unknown_field", "vocIndex")]
    [reading] = [reading for reading in decoded.readings if reading.family == "air_quality"]
    # batteryVoltage is on the profile's ignore list: not kept, not reported.
    assert "batteryVoltage" not in reading.fields and reading.fields["no2"] == 31.2


def test_a_decoded_value_out_of_bounds_is_refused_by_the_contract_decoder() -> None:
    payload = sample("tts_up_decoded", {'"pm25": 9.2': '"pm25": 9200.0'})
    decoded = _decoder().decode(SAMPLES["tts_up_decoded"], payload)
    assert [(error.reason, error.field) for error in decoded.errors] == [("out_of_bounds", "pm25")]


@pytest.mark.parametrize(
    ("replace", "reason", "says"),
    [
        ({"{": "[", "}": "]"}, "bad_uplink", "not valid JSON"),
        ({'"devEui": "0101010101010101"': '"devEui": "0101010101010102"'}, "bad_uplink", "differs"),
        ({'"time": "': '"time": "yesterday'}, "bad_uplink", "time"),
        ({'"data": "AQIDBA=="': '"data": "***"'}, "bad_uplink", "not valid base64"),
    ],
)
def test_a_malformed_event_is_refused_with_its_reason(
    replace: dict[str, str], reason: str, says: str
) -> None:
    decoded = _decoder().decode(SAMPLES["chirpstack_up_decoded"], sample("chirpstack_up_decoded", replace))
    assert [error.reason for error in decoded.errors] == [reason]
    assert says in decoded.errors[0].detail
    assert decoded.readings == []


def test_join_and_other_events_are_acknowledged_without_a_trace() -> None:
    topic = SAMPLES["chirpstack_up_decoded"].replace("/event/up", "/event/join")
    decoded = _decoder().decode(topic, sample("chirpstack_status"))
    assert decoded.readings == [] and decoded.errors == []
    # An uplink simulated from The Things Stack's console is not a measurement either.
    simulated = sample("tts_up_decoded", {'"correlation_ids"': '"simulated": true, "correlation_ids"'})
    decoded = _decoder().decode(SAMPLES["tts_up_decoded"], simulated)
    assert decoded.readings == [] and decoded.errors == []


def test_native_topics_still_go_to_the_contract_decoder() -> None:
    decoded = _decoder().decode("smartcity/v1/78498/air_quality/aq-1", b'{"ts": 1772434800000, "pm25": 3}')
    assert decoded.ok and decoded.readings[0].fields == {"pm25": 3}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[devices.0101]\ninsee = '78498'", "is not an EUI"),
        (
            "[profiles.p.fields]\nx = 'pm25'\n\n[devices.0101010101010101]\ninsee = '78498'\n"
            "family = 'air_quality'\ndevice_id = 'a'\nprofile = 'q'",
            ":4: devices.0101010101010101: profile 'q' is not defined",
        ),
        (
            "[profiles.p.fields]\nx = 'pm99'\n\n[devices.0101010101010101]\ninsee = '78498'\n"
            "family = 'air_quality'\ndevice_id = 'a'\nprofile = 'p'",
            "maps 'x' to 'pm99', which is not a field of air_quality",
        ),
        (
            "[profiles.p.fields]\nx = { field = 'pm25', unit = 'CEL' }\n\n[devices.0101010101010101]\n"
            "insee = '78498'\nfamily = 'air_quality'\ndevice_id = 'a'\nprofile = 'p'",
            "cannot be converted",
        ),
        ("[profiles.p]\ncodec = 'javascript'\n[profiles.p.fields]\nx = 'pm25'", "needs script"),
        (
            "[profiles.p]\ncodec = 'javascript'\nscript = 'missing.js'\n[profiles.p.fields]\nx = 'pm25'",
            ":1: profiles.p: script",
        ),
        (
            "[profiles.p.fields]\nx = 'pm25'\n[devices.0101010101010101]\ninsee = '99999'\n"
            "family = 'air_quality'\ndevice_id = 'a'\nprofile = 'p'",
            "not in the commune registry",
        ),
        (
            "[profiles.p.fields]\nx = 'pm25'\n[devices.0101010101010101]\ninsee = '78498'\n"
            "family = 'weather'\ndevice_id = 'a'\nprofile = 'p'",
            "devices.0101010101010101.family",
        ),
        ("[devices.0101010101010101\n", "not valid TOML"),
    ],
)
def test_device_map_errors_name_the_line_and_the_key(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(DeviceMapError) as caught:
        DeviceMap.load(path, REGISTRY)
    assert says in str(caught.value)


def test_the_shipped_example_device_map_is_valid() -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    devices = DeviceMap.load(examples / "lorawan-devices.toml", REGISTRY)
    assert len(devices) >= 2


def test_the_sample_input_config_is_valid_settings() -> None:
    root = Path(__file__).resolve().parent.parent
    settings = load_settings(root / "examples" / "lorawan.toml")
    assert settings.ingest.lorawan is not None
    assert settings.ingest.subscriptions == [
        "smartcity/v1/+/+/+",
        "application/+/device/+/event/+",
        "v3/+/devices/+/up",
    ]


def test_lorawan_check_accepts_the_example_map_and_names_the_line_of_a_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(__file__).resolve().parent.parent
    assert main(["lorawan", "check", str(root / "examples" / "lorawan-devices.toml")]) == 0
    assert "3 device(s), 1 named gateway(s): valid" in capsys.readouterr().out
    broken = tmp_path / "devices.toml"
    text = (root / "examples" / "lorawan-devices.toml").read_text("utf-8")
    broken.write_text(text.replace('insee = "78005"', 'insee = "78999"'), "utf-8")
    assert main(["lorawan", "check", str(broken)]) == 1
    error = capsys.readouterr().err
    line = text[: text.index('insee = "78005"')].count("\n")  # the entry's header is the line above
    assert (
        f"devices.toml:{line}: devices.A81758FFFE0312AC: insee '78999' is not in the commune registry"
        in error
    )


CAMERA_MAP = """
[profiles.counter-cam.fields]
"counts.people" = "peopleCount"

[devices.0404040404040404]
insee = "78498"
family = "camera"
device_id = "cam-gare"
profile = "counter-cam"
"""


def test_a_camera_uplink_carrying_a_face_is_refused_whole_and_its_payload_withheld(tmp_path: Path) -> None:
    decoder = _decoder(CAMERA_MAP, tmp_path)
    topic = SAMPLES["chirpstack_up_decoded"].replace("0101010101010101", "0404040404040404")
    face = '"object": {"counts": {"people": 3, "faceImage": "/9j/4AAQ"}}, "unused": {'
    payload = sample("chirpstack_up_decoded", {"0101010101010101": "0404040404040404", '"object": {': face})
    decoded = decoder.decode(topic, payload)
    assert [error.reason for error in decoded.errors] == ["forbidden_field"]
    assert decoded.payload_is_private
    assert [reading.family for reading in decoded.readings] == ["lorawan_radio"]
    clean = sample(
        "chirpstack_up_decoded",
        {
            "0101010101010101": "0404040404040404",
            '"object": {': '"object": {"counts": {"people": 3}}, "unused": {',
        },
    )
    decoded = decoder.decode(topic, clean.replace(b"3ac7e3c4", b"3ac7e3c9"))
    assert decoded.ok and decoded.readings[0].fields == {"peopleCount": 3}


def test_a_camera_uplink_its_codec_refused_is_still_kept_private(tmp_path: Path) -> None:
    decoder = _decoder(
        CAMERA_MAP.replace(
            "[profiles.counter-cam.fields]",
            '[profiles.counter-cam]\ncodec = "cayenne_lpp"\n[profiles.counter-cam.fields]',
        ),
        tmp_path,
    )
    topic = SAMPLES["chirpstack_up_raw"].replace("0202020202020202", "0404040404040404")
    payload = sample("chirpstack_up_raw", {"0202020202020202": "0404040404040404", "AWcA5gJ9Ab0=": "AWcA"})
    decoded = decoder.decode(topic, payload)
    assert [error.reason for error in decoded.errors] == ["codec_error"]
    assert decoded.private and decoded.payload_is_private


def test_a_camera_profile_may_not_ignore_keys(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(
        CAMERA_MAP.replace(
            "[profiles.counter-cam.fields]",
            '[profiles.counter-cam]\nignore = ["snapshot"]\n[profiles.counter-cam.fields]',
        )
    )
    with pytest.raises(DeviceMapError, match="allow-list"):
        DeviceMap.load(path, REGISTRY)
