// A vendor codec in the format of the LoRaWAN device repository (TheThingsNetwork/lorawan-devices):
// port 10 carries a uint32 vehicle count since the previous uplink and a uint16 mean speed (km/h).
function decodeUplink(input) {
  if (input.fPort !== 10) {
    return { errors: ["unknown fPort " + input.fPort] };
  }
  if (input.bytes.length !== 6) {
    return { errors: ["expected 6 bytes, got " + input.bytes.length] };
  }
  var b = input.bytes;
  return {
    data: {
      vehicles: ((b[0] << 24) >>> 0) + (b[1] << 16) + (b[2] << 8) + b[3],
      speed: (b[4] << 8) + b[5]
    },
    warnings: []
  };
}
