// A codec that never returns.
function decodeUplink(input) {
  while (true) {}
}
