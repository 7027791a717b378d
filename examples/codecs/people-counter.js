// Example vendor codec, in the format of the LoRaWAN device repository
// (github.com/TheThingsNetwork/lorawan-devices): decodeUplink({bytes, fPort}) -> {data, warnings, errors}.
// A people counter at a building entrance: port 1 carries, big-endian,
//   uint16 people counted since the previous uplink, uint16 people present now,
//   int16 indoor temperature in 0.1 °C, uint8 battery percent.
function decodeUplink(input) {
  if (input.fPort !== 1) {
    return { errors: ["unsupported fPort " + input.fPort] };
  }
  var b = input.bytes;
  if (b.length < 7) {
    return { errors: ["payload too short: " + b.length + " bytes, expected 7"] };
  }
  var raw = (b[4] << 8) | b[5];
  if (raw & 0x8000) {
    raw -= 0x10000;
  }
  return {
    data: {
      entries: (b[0] << 8) | b[1],
      present: (b[2] << 8) | b[3],
      temperature: raw / 10,
      battery: b[6]
    },
    warnings: []
  };
}
